"""The adaptation registry: its entries, published values, overrides and the pairing rule."""
import pytest

import methods
from bench.adaptation import registry as R
from bench.core.errors import ConfigError


def test_required_entries_with_their_published_values():
    assert {"none", "alg3", "official", "oracle", "lan-offset", "ssl-finetune", "zs-n2n", "nlm", "bm3d"} <= set(R.names())
    alg3, official, oracle = R.get("alg3"), R.get("official"), R.get("oracle")
    assert (alg3.moves, alg3.loss, alg3.optimizer, alg3.steps, alg3.lr, alg3.mask_threshold, alg3.predict_after) \
        == ("heads", "aux-mask", "sgd", 5, 1e-5, None, "last")
    assert (official.moves, official.optimizer, official.lr, official.mask_threshold, official.predict_after,
            official.steps) == ("official-heads", "adam", 1e-5, 0.5, "before-last", 5)
    assert "real_denoiser.py" in official.citation and "1051" in official.citation  # the freeze it follows
    assert official.updates_behind_prediction == 4 and alg3.updates_behind_prediction == 5
    assert (oracle.moves, oracle.steps, oracle.optimizer, oracle.loss, oracle.evaluation_only) \
        == (alg3.moves, alg3.steps, alg3.optimizer, "oracle", True)
    lan, ft, zs = R.get("lan-offset"), R.get("ssl-finetune"), R.get("zs-n2n")
    assert (lan.moves, lan.loss, lan.optimizer, lan.lr, lan.steps) == ("offset", "zs-n2n", "adam", 5e-4, 20)
    assert (ft.moves, ft.loss, ft.optimizer, ft.lr) == ("all", "zs-n2n", "adam", 5e-6)
    assert (zs.moves, zs.optimizer, zs.lr, zs.steps, zs.halve_lr_at) == ("fresh", "adam", 1e-3, 2000, 1500)
    assert "chjinny/LAN" in lan.citation and "CVPR 2023" in zs.citation
    nlm = R.get("nlm")
    assert nlm.moves == "classical" and nlm.options["h_factor"] == 0.8 and not nlm.learns
    assert (nlm.options["algorithm"], nlm.options["sigma_scale"]) == ("nlm", 1.0)
    bm3d = R.get("bm3d")
    assert (bm3d.moves, bm3d.loss, bm3d.learns, bm3d.options) \
        == ("classical", "none", False, {"algorithm": "bm3d", "sigma_scale": 1.0, "profile": "np"})
    assert "Dabov" in bm3d.citation and "IEEE TIP 2007" in bm3d.citation and "Mäkinen" in bm3d.citation
    assert R.names().index("bm3d") == R.names().index("nlm") + 1
    assert [R.get(n).requires for n in ("alg3", "oracle", "lan-offset", "zs-n2n", "nlm", "bm3d")] \
        == ["aux-head+mask", "aux-head", "restorer", "nothing", "nothing", "nothing"]


def test_unknown_name_is_one_line_listing_the_known_ones():
    with pytest.raises(ConfigError) as e:
        R.get("lan")
    msg = str(e.value)
    assert "\n" not in msg and "'lan'" in msg and all(n in msg for n in R.names())


def test_oracle_is_never_selectable():
    assert "oracle" in R.names() and "oracle" not in R.names(selectable=True)
    with pytest.raises(ConfigError, match="evaluation-only"):
        R.get_selectable("oracle")
    assert R.get_selectable("lan-offset") is R.get("lan-offset")


def test_describe_rows():
    rows = R.describe()
    assert [r["name"] for r in rows] == R.names()
    for r in rows:
        assert {"name", "moves", "loss", "optimizer", "steps", "lr", "description", "citation"} <= set(r)
        assert r["description"] and r["citation"] and "\n" not in r["description"]


def test_overrides_and_their_validation():
    quick = R.get("zs-n2n").with_(steps=3, lr=2e-3)
    assert (quick.steps, quick.lr, quick.halve_lr_at, quick.name) == (3, 2e-3, 1500, "zs-n2n")
    assert R.get("zs-n2n").steps == 2000  # the registry entry itself is unchanged
    for bad, match in [(dict(steps=-1), "steps -1"), (dict(steps=2.5), "steps 2.5"), (dict(lr=float("nan")), "lr nan"),
                       (dict(optimizer="rmsprop"), "optimizer 'rmsprop'"), (dict(mask_threshold=1.5), "mask_threshold"),
                       (dict(predict_after="first"), "predict_after 'first'"), (dict(moves="all"), "cannot override moves")]:
        with pytest.raises(ConfigError, match=match) as e:
            R.get("alg3").with_(**bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="'nlm'.*no steps"):
        R.get("nlm").with_(steps=3)


def test_classical_entries_override_their_options_only():
    nlm, bm3d = R.get("nlm"), R.get("bm3d")
    assert nlm.with_(h_factor=0.6).options == {**nlm.options, "h_factor": 0.6}
    assert bm3d.with_(sigma_scale=1.5).options == {**bm3d.options, "sigma_scale": 1.5}
    assert bm3d.with_(sigma_scale=2, profile="refilter").options["profile"] == "refilter"
    assert nlm.options["h_factor"] == 0.8 and bm3d.options["sigma_scale"] == 1.0  # the registry is unchanged
    assert bm3d.with_() is bm3d and nlm.option_keys == ("sigma_scale", "patch_size", "patch_distance", "h_factor",
                                                        "fast_mode")
    cases = [(nlm, dict(steps=3), ("cannot override steps; overridable: sigma_scale, patch_size, patch_distance, "
                                   "h_factor, fast_mode")),
             (bm3d, dict(lr=1e-3), "cannot override lr; overridable: sigma_scale, profile"),
             (bm3d, dict(algorithm="nlm"), "cannot override algorithm"),
             (bm3d, dict(sigma_scale=0), "sigma_scale 0: expected a finite number > 0"),
             (bm3d, dict(sigma_scale=-1.5), "sigma_scale -1.5"),
             (nlm, dict(h_factor=float("inf")), "h_factor inf"),
             (bm3d, dict(sigma_scale="big"), "sigma_scale 'big'"),
             (nlm, dict(patch_size=4.5), "patch_size 4.5: expected an integer"),
             (nlm, dict(fast_mode=1), "fast_mode 1: expected true or false"),
             (bm3d, dict(profile="best"), "profile 'best': expected one of np, "),
             (R.get("none"), dict(steps=2), "'none'.*no options to override")]
    for entry, bad, match in cases:
        with pytest.raises(ConfigError, match=match) as e:
            entry.with_(**bad)
        assert "\n" not in str(e.value) and repr(entry.name) in str(e.value)
    with pytest.raises(ConfigError, match="options.algorithm 'wiener'"):
        R.Adaptation("w", "classical", "none", "d", "c", options={"algorithm": "wiener"}).validate()


def test_impossible_pairing_is_one_line():
    with pytest.raises(ConfigError) as e:
        R.check_pairing("alg3", "ridnet")
    msg = str(e.value)
    assert "\n" not in msg and "'alg3'" in msg and "'ridnet'" in msg and "auxiliary head" in msg
    with pytest.raises(ConfigError, match="'oracle' cannot run on method 'mirnet'"):
        R.check_pairing("oracle", "mirnet")
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        R.check_pairing("alg3", "nope")
    for method in ("ridnet", "mirnet", "ours", "chi"):  # by name: built on the meta device, no memory
        for name in ("none", "lan-offset", "ssl-finetune", "zs-n2n", "nlm", "bm3d"):
            R.check_pairing(name, method)
    R.check_pairing("alg3", "ours")
    R.check_pairing("official", methods.create("ours", base=8, scale=4, mask_base=8))  # a built model
    ridnet, some = R.compatible("ridnet"), ["none", "lan-offset", "ssl-finetune", "zs-n2n", "nlm", "bm3d"]
    assert [n for n in ridnet if n in some] == some and not {"alg3", "official", "oracle"} & set(ridnet)
    assert set(R.compatible("ours")) == set(R.names())


def test_bind_follows_the_method_recipe():
    assert R.bind("alg3", "ours") == R.get("alg3")
    assert R.bind("alg3", "ours-rl").loss == "aux-rec"  # meta-trained with the unmasked L_rec
    assert R.bind("official", "ours-body-head").moves == "all"  # body + heads in the inner loop
    assert R.bind("oracle", "ours-body-head").moves == "all"
    assert R.bind("lan-offset", "ridnet") == R.get("lan-offset")
    with pytest.raises(ConfigError, match="cannot run on method 'ridnet'"):
        R.bind("alg3", "ridnet")


# ---- the protocol: moves and losses are objects, named in the entries ----------------------------------

def test_every_built_in_entry_is_written_with_the_protocol():
    from bench.adaptation.families import LOSSES, MOVES, Loss, Moves

    for e in R.REGISTRY.values():
        assert isinstance(e.mover, Moves) and e.mover is MOVES[e.moves]
        assert isinstance(e.objective, Loss) and e.objective is LOSSES[e.loss]
        assert e.learns == e.mover.learns and e.source == "built-in"


def test_an_entry_may_carry_its_own_objects_and_keeps_their_names():
    import pickle

    from bench.adaptation.families import Loss, RestorerWeights

    class LastConv(RestorerWeights):
        name = "last-conv"

        def select(self, restorer):
            return dict(list(restorer.named_parameters())[-1:])

    class Twice(Loss):
        name = "twice-zs"

        def bind(self, entry, model, moved, clean):
            return R.get("zs-n2n").objective.bind(entry, model, moved, clean)

    e = R.Adaptation("mine", LastConv(), Twice(), "d", "c", optimizer="adam", steps=2, lr=1e-3)
    e.validate()
    assert (e.moves, e.loss, e.requires) == ("last-conv", "twice-zs", "restorer")
    assert e.describe()["moves"] == "last-conv" and "moves_impl" not in e.describe()
    assert e.with_(steps=3).mover is e.mover
    R.probe_moves(e, "adaptation 'mine'")
    assert pickle.loads(pickle.dumps(R.get("official"))) == R.get("official")


def test_an_entry_that_moves_nothing_or_reuses_a_family_name_is_one_line():
    from bench.adaptation.families import Loss, RestorerWeights

    class Nothing(RestorerWeights):
        name = "nothing"

        def select(self, restorer):
            return {}

    class Fake(Loss):
        name = "aux-mask"

    cases = [(R.Adaptation("a", "none", "zs-n2n", "d", "c"), "moves no parameter"),
             (R.Adaptation("b", "offset", "aux-rec", "d", "c", optimizer="sgd", steps=1, lr=1.0), "heads or weights"),
             (R.Adaptation("c", "all", Fake(), "d", "c", optimizer="sgd", steps=1, lr=1.0), "name of a built-in loss"),
             (R.Adaptation("d", "sideways", "zs-n2n", "d", "c"), "moves 'sideways'")]
    for entry, words in cases:
        with pytest.raises(ConfigError, match=words) as e:
            entry.validate()
        assert "\n" not in str(e.value) and f"adaptation {entry.name!r}" in str(e.value)
    still = R.Adaptation("e", Nothing(), "zs-n2n", "d", "c", optimizer="sgd", steps=1, lr=1.0)
    still.validate()
    with pytest.raises(ConfigError, match="moves no parameter"):
        R.probe_moves(still, "adaptation 'e'")


# ---- select: every family tuned alike, and choices on a grid's edge --------------------------------------

def test_select_grids_on_classical_options():
    from bench.adaptation.select import adaptations_needed, candidates

    grid = {"sigma_scale": [0.5, 0.75, 1.0, 1.5, 2.0]}
    cands = candidates(R.get("bm3d"), grid)
    assert [c.options["sigma_scale"] for c in cands] == grid["sigma_scale"]
    assert all(c.options["algorithm"] == "bm3d" and c.name == "bm3d" for c in cands)
    assert adaptations_needed(R.get("bm3d"), grid, 2) == 2 * (1 + 5)  # each candidate a run of its own
    assert [c.options["h_factor"] for c in candidates(R.get("nlm"), {"h_factor": [0.4, 0.8]})] == [0.4, 0.8]
    nlm_steps = "'steps' cannot be chosen for adaptation 'nlm', which does not learn; choosable: its options sigma_scale"
    for entry, bad, words in [(R.get("nlm"), {"steps": [1, 2]}, nlm_steps),
                              (R.get("bm3d"), {"algorithm": ["nlm"]}, "'algorithm' cannot be chosen"),
                              (R.get("none"), {"lr": [1e-3]}, "nothing to choose"),
                              (R.get("alg3"), {"sigma_scale": [1.0]}, "'sigma_scale' cannot be chosen; choosable: st"),
                              (R.get("bm3d"), {"sigma_scale": [1.0, -1.0]}, "sigma_scale -1.0")]:
        with pytest.raises(ConfigError, match=words) as e:
            candidates(entry, bad)
        assert "\n" not in str(e.value)


def _fake_adapt(gain, calls):
    """An ``adapt_image`` whose PSNR curve is 20 dB plus ``gain(entry, k)`` after k updates (no network)."""
    from types import SimpleNamespace

    def adapt_image(entry, model, noisy, clean, diagnostics=False, seed=0):
        calls.append(entry)
        if entry.name == "none":
            return SimpleNamespace(psnr=[20.0])
        return SimpleNamespace(psnr=[20.0 + gain(entry, k) for k in range(entry.steps + 1)])

    return adapt_image


def _pairs(n=2):
    import numpy as np

    from bench.data.base import ImagePair

    rng = np.random.default_rng(0)
    return [ImagePair(f"i{i}", c, c) for i, c in enumerate(rng.uniform(0, 1, (n, 8, 8, 3)).astype(np.float32))]


@pytest.mark.parametrize("peak, edge", [(3, "steps=3 (grid max)"), (2, None), (1, "steps=1 (grid min)")])
def test_a_choice_on_the_edge_of_a_grid_is_flagged(monkeypatch, peak, edge):
    import torch

    from bench.adaptation import select

    calls = []
    monkeypatch.setattr(select, "adapt_image", _fake_adapt(lambda e, k: -abs(k - peak) + 1e3 * e.lr, calls))
    grid = {"steps": [1, 2, 3], "lr": [1e-4, 1e-3]}  # lr: two values, never an edge
    model = methods.create("ours", base=4, scale=2, mask_base=4)
    best, records = select.choose(model, R.get("alg3"), grid, _pairs(), torch.device("cpu"))
    assert (best.steps, best.lr) == (peak, 1e-3)
    assert len(calls) == 2 * (1 + 2)  # one (longest) run per lr and instance, plus the plain forward
    chosen = [r for r in records if r.get("chosen")]
    assert len(chosen) == 1 and chosen[0].get("edge") == edge
    assert all("edge" not in r for r in records if not r.get("chosen"))


def test_edges_join_several_axes_and_classical_options_are_recorded(monkeypatch):
    import torch

    from bench.adaptation import select

    calls = []
    gain = {0.5: 0.1, 1.0: 0.3, 2.0: 0.2}
    monkeypatch.setattr(select, "adapt_image", _fake_adapt(lambda e, k: gain[e.options["sigma_scale"]], calls))
    best, records = select.choose(None, R.get("bm3d"), {"sigma_scale": [0.5, 1.0, 2.0]}, _pairs(), torch.device("cpu"))
    assert best.options["sigma_scale"] == 1.0 and len(calls) == 2 * (1 + 3)
    assert [r["sigma_scale"] for r in records] == [0.5, 1.0, 2.0] and all(r["profile"] == "np" for r in records)
    assert [r["val_gain_db"] for r in records] == pytest.approx([0.1, 0.3, 0.2])
    assert records[1]["chosen"] and all("edge" not in r for r in records)  # interior: no flag
    gain[2.0] = 0.5
    best, records = select.choose(None, R.get("bm3d"), {"sigma_scale": [0.5, 1.0, 2.0]}, _pairs(), torch.device("cpu"))
    assert records[2]["edge"] == "sigma_scale=2 (grid max)"
    assert select.edges({"steps": [1, 2, 3], "lr": [1e-4, 1e-3, 1e-2], "optimizer": ["sgd", "adam", "x"]},
                        {"steps": 3, "lr": 1e-4, "optimizer": "sgd"}) == "steps=3 (grid max); lr=0.0001 (grid min)"
    assert select.edges({"steps": [1, 2, 3, 2]}, {"steps": 2}) == ""
