"""The domain oracle: fitted once per scenario on validation only, applied unchanged to test."""
import copy

import numpy as np
import pytest
import torch

import methods
from bench.adaptation import registry as R
from bench.adaptation.domain import fit_domain, first_tiles, split_tiles
from bench.adaptation.evaluate import Target, evaluate
from bench.core.errors import ConfigError
from bench.data.base import ImagePair


def pairs(photo: str, tiles: int, draws: int, seed: int, size: int = 16) -> list[ImagePair]:
    rng = np.random.default_rng(seed)
    out = []
    for t in range(tiles):
        clean = rng.uniform(0.2, 0.8, (size, size, 3)).astype(np.float32)
        for d in range(draws):
            noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
            out.append(ImagePair(f"{photo}/t{t:02d}/d{d}", clean, noisy))
    return out


@pytest.fixture(scope="module")
def ours():
    torch.manual_seed(3)
    return methods.create("ours", base=4, scale=2, mask_base=4)


def test_tiles_are_split_and_capped_with_their_draws_together():
    val = pairs("astro", 5, 2, 0)
    fit, held = split_tiles(val)
    assert {p.name.rsplit("/", 1)[0] for p in fit} == {"astro/t00", "astro/t02", "astro/t04"}
    assert {p.name.rsplit("/", 1)[0] for p in held} == {"astro/t01", "astro/t03"}
    two = first_tiles(val + pairs("other", 3, 2, 1), 2)
    assert [p.name for p in two] == ["astro/t00/d0", "astro/t00/d1", "astro/t01/d0", "astro/t01/d1",
                                     "other/t00/d0", "other/t00/d1", "other/t01/d0", "other/t01/d1"]
    assert first_tiles(val, None) == val


def test_fit_moves_only_the_heads_of_a_copy_and_chooses_on_the_held_out_half(ours):
    before = copy.deepcopy(ours.state_dict())
    entry = R.get("domain-oracle").with_(steps=30, lr=3e-3)
    fit = fit_domain(entry, ours, pairs("astro", 4, 2, 0), torch.device("cpu"))
    for k, v in ours.state_dict().items():  # the model itself is untouched
        assert torch.equal(v, before[k]), k
    heads = tuple(ours.restorer.head_names)
    moved = {k for k, v in fit.model.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and all(k.startswith(tuple(f"restorer.{h}." for h in heads)) for k in moved)
    assert fit.steps in range(0, 31, 10) or fit.steps == 30
    assert fit.heldout_l1 <= fit.heldout_l1_start and (fit.fit_tiles, fit.heldout_tiles) == (2, 2)


def test_evaluate_fits_per_scenario_on_validation_and_scores_test_unadapted(ours):
    entry = R.get("domain-oracle").with_(steps=20, lr=3e-3)
    val = {"a": pairs("astro", 4, 1, 0), "b": pairs("astro", 4, 1, 5)}
    test = [Target("test", s, pairs("coffee", 2, 1, 9 + i)) for i, s in enumerate(val)]
    fit_on = [Target("val", s, v) for s, v in val.items()]
    rows = evaluate(ours, entry, test, torch.device("cpu"), fit_on=fit_on)
    for scenario in val:  # each scenario's rows = its own fit, scored with no adaptation
        fitted = fit_domain(entry, ours, val[scenario], torch.device("cpu")).model
        target = next(t for t in test if t.scenario == scenario)
        again = evaluate(fitted, R.get("none"), [target], torch.device("cpu"))
        mine = [r for r in rows if r["scenario"] == scenario]
        assert [r["psnr_float"] for r in mine] == pytest.approx([r["psnr_float"] for r in again], abs=1e-6)
    with pytest.raises(ConfigError, match="validation instances of scenario 'a'"):
        evaluate(ours, entry, test, torch.device("cpu"))


def test_a_domain_entry_must_move_restorer_weights_and_stay_in_tta_studies(tmp_path, run_cli):
    with pytest.raises(ConfigError, match="scope domain"):
        R.Adaptation("x", "offset", "zs-n2n", "d", "c", optimizer="adam", steps=1, lr=1e-3, scope="domain").validate()
    study = tmp_path / "s.yaml"
    study.write_text("title: t\ndescription: d\nrows:\n  - {name: r, method: ours, adapt: domain-oracle}\n")
    code, out, err = run_cli("run", str(study), "--preset", "smoke", "--home", str(tmp_path / "h"))
    assert code == 2 and "domain-oracle" in err and "TTA study" in err and "Traceback" not in err
