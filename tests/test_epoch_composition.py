"""What one training epoch is made of: the per-image walk (the official data loader's epoch) on a
fake SIDD-Small + PolyU tree, its checkpointed state, and the `paper` preset end to end."""
import copy
import math
from collections import Counter

import numpy as np
import pytest
import torch
from test_paper_data import write_paper_tree

import methods
from bench.cli import main
from bench.adaptation.registry import from_metatest
from bench.core.config import FinetuneConfig, MetaTestConfig, load_preset
from bench.data import PatchSampler, Source
from bench.data.base import ImagePair
from bench.data.paper import load_paper_data, split_heldout
from bench.data.real import load_polyu, load_sidd_small
from bench.training.context import TrainContext
from bench.training.mtl import finetune_mtl


def _pairs(n: int, size: int = 8) -> list[ImagePair]:
    return [ImagePair(f"p{i:03d}", np.full((size, size, 3), i % 256, np.uint8),
                      np.full((size, size, 3), i % 256, np.uint8)) for i in range(n)]


def _walks(sampler: PatchSampler, steps: int) -> list[list[int]]:
    return [sampler.next_walk() for _ in range(steps)]


@pytest.fixture
def walks(monkeypatch) -> dict[int, list[tuple[str, ...]]]:
    """Image names of every batch a per-image sampler draws, by sampler (the draw itself unchanged)."""
    seen: dict[int, list[tuple[str, ...]]] = {}
    real_next_walk = PatchSampler.next_walk

    def spy(self):
        picked = real_next_walk(self)
        seen.setdefault(id(self), []).append(tuple(self.source.pairs[i].name for i in picked))
        return picked

    monkeypatch.setattr(PatchSampler, "next_walk", spy)
    return seen


@pytest.fixture(scope="module")
def paper_tree(tmp_path_factory):
    """SIDD-Small's 160 scenes and PolyU's 100 crops, in their real layouts (tiny images)."""
    root = tmp_path_factory.mktemp("paper") / "data"
    write_paper_tree(root, n_sidd=160, n_polyu=100)
    return root


def test_paper_epoch_visits_every_training_image_once(paper_tree, walks):
    preset = load_preset("paper", [f"data.root={paper_tree}", "finetune.patch=32"])
    data = load_paper_data(preset.data)
    sidd = {p.name for p in split_heldout(load_sidd_small(paper_tree), preset.data.val_fraction)[0]}
    polyu = {p.name for p in split_heldout(load_polyu(paper_tree), preset.data.val_fraction)[0]}
    assert (len(sidd), len(polyu)) == (144, 90)  # 160 and 100 minus every 10th pair held out for validation
    sampler = PatchSampler(data.train, preset.finetune.patch, preset.finetune.batch, np.random.default_rng(0))
    steps = sampler.steps_per_epoch(preset.finetune.steps_per_epoch)
    assert steps == math.ceil((144 + 90) / 2) == 117
    for _ in range(steps):
        noisy, clean = sampler()
        assert noisy.shape[1:] == (3, 32, 32)
    (batches,) = walks.values()
    seen = Counter(name for batch in batches for name in batch)
    assert set(seen.values()) == {1} and set(seen) == sidd | polyu  # every training image exactly once
    per_set = Counter("SIDD" if name in sidd else "PolyU" for name in seen)
    assert per_set == {"SIDD": 144, "PolyU": 90}  # by area, PolyU's small crops would get ~1 % of them
    assert sampler.walk == []  # the epoch ended exactly at the end of the walk


def test_official_mtl_epoch_is_130_steps_of_two():
    """The official MTL set (160 + 100 pairs, no held-out split) at batch 2: 130 steps, 19,500 in 150 epochs."""
    source = Source(_pairs(260), sampler="per-image")
    sampler = PatchSampler(source, 4, 2, np.random.default_rng(1))
    steps = sampler.steps_per_epoch(load_preset("paper").finetune.steps_per_epoch)
    assert (steps, 150 * steps) == (130, 19_500)
    for _ in range(2):  # two epochs, each its own shuffled walk
        batches = _walks(sampler, steps)
        assert all(len(b) == 2 for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(260))


def test_short_last_batch_and_fresh_order_each_walk():
    sampler = PatchSampler(Source(_pairs(5), sampler="per-image"), 4, 2, np.random.default_rng(2))
    assert sampler.steps_per_epoch("auto") == 3 and sampler.steps_per_epoch(7) == 7
    first, second = _walks(sampler, 3), _walks(sampler, 3)
    assert [len(b) for b in first] == [len(b) for b in second] == [2, 2, 1]
    assert sum(first, []) != sum(second, [])  # reshuffled (seed 2)
    noisy, clean = sampler()
    assert noisy.shape == clean.shape == (2, 3, 4, 4)


def test_patches_come_from_the_walked_images():
    pairs = _pairs(6)
    a = PatchSampler(Source(pairs, sampler="per-image"), 4, 3, np.random.default_rng(3))
    b = PatchSampler(Source(pairs, sampler="per-image"), 4, 3, np.random.default_rng(3))
    noisy, clean = a()
    picked = b.next_walk()
    assert torch.equal(clean, b.patches(picked)[1])
    # each image is constant-valued: the patch's value names the image it was cropped from
    assert [round(float(c[0, 0, 0]) * 255) for c in clean] == picked


def test_resume_mid_walk_draws_the_same_patches():
    """The walk's remaining order + the generator's state are all a resumed stage needs."""
    source = Source(_pairs(7), sampler="per-image")
    rng = np.random.default_rng(4)
    run = PatchSampler(source, 4, 2, rng)
    _walks(run, 5)  # one walk of 4 steps and a step into the next
    state, rng_state = run.state_dict(), rng.bit_generator.state
    expected = [run() for _ in range(6)]
    rng2 = np.random.default_rng(99)
    resumed = PatchSampler(source, 4, 2, rng2)
    resumed.load_state_dict(state)
    rng2.bit_generator.state = rng_state
    for (n1, c1), (n2, c2) in zip(expected, [resumed() for _ in range(6)]):
        assert torch.equal(n1, n2) and torch.equal(c1, c2)
    with pytest.raises(Exception, match="area"):
        PatchSampler(Source(_pairs(7)), 4, 2, rng2).load_state_dict(state)


def test_embedded_presets_keep_the_area_sampler_and_their_step_counts():
    for name, steps in (("smoke", (2, 2)), ("quick", (40, 30))):
        p = load_preset(name)
        assert p.data.sampler == "area"
        assert (p.finetune.steps_per_epoch, p.supervised.steps_per_epoch) == steps


@pytest.mark.parametrize("item", ["data.sampler=shuffle", "finetune.steps_per_epoch=some",
                                  "supervised.steps_per_epoch=0"])
def test_bad_sampler_settings_are_one_line_errors(tmp_path, capsys, item):
    with pytest.raises(SystemExit) as exc:
        main(["run", "table2", "--preset", "smoke", "--set", item, "--home", str(tmp_path / "home")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error:") and item.split("=")[0] in err
    assert not (tmp_path / "home" / "mlflow.db").exists()


def _mtl(source: Source, epochs: int, resume: dict | None = None, seed: int = 0) -> tuple[dict, list[dict]]:
    torch.manual_seed(seed)
    model, saved = methods.create("ours"), []
    cfg = FinetuneConfig(epochs=epochs, steps_per_epoch=3, batch=2, patch=8, steps=1, val_every=epochs)  # 3 steps: walks straddle epochs
    val = [ImagePair("v", *(np.random.default_rng(9).random((2, 16, 16, 3), dtype=np.float32)))]
    ctx = TrainContext(device=torch.device("cpu"), rng=np.random.default_rng(seed), quiet=True,
                       save_state=lambda s: saved.append(copy.deepcopy(s)), resume=resume)
    finetune_mtl(model, methods.get("ours").recipe, cfg, from_metatest(MetaTestConfig(steps=1)), source, val, ctx)
    return model.state_dict(), saved


def test_mtl_resumed_mid_walk_ends_with_the_same_weights(monkeypatch):
    monkeypatch.setenv("BENCH_CHECKPOINT_SECONDS", "0")
    source = Source(_pairs(7, 12), sampler="per-image")
    final, saved = _mtl(source, 2)
    assert saved[0]["epoch"] == 1 and saved[0]["stateful"][-1]["walk"]  # killed with a walk half done
    resumed, _ = _mtl(source, 2, resume=saved[0], seed=7)
    assert all(torch.equal(final[k], resumed[k]) for k in final)


@pytest.mark.slow
def test_paper_table2_runs_the_per_image_regime(tmp_path, capsys, walks):
    """`bench run table2 --preset paper` on a fake tree: every training stage walks its images."""
    root = tmp_path / "data"
    write_paper_tree(root, n_sidd=4, n_polyu=2)  # val_fraction 0.5: 2 + 1 pairs to train on, 2 + 1 to validate
    sets = ["data.eval_crop=32", "data.val_fraction=0.5", "pretrain.epochs=1", "pretrain.steps_per_epoch=1",
            "pretrain.batch=2", "pretrain.patch=32", "finetune.epochs=2", "finetune.patch=32", "finetune.steps=2",
            "supervised.epochs=1", "supervised.batch=2", "supervised.patch=32", "metatest.steps=2"]
    main(["run", "table2", "--preset", "paper", "--data-root", str(root), "--home", str(tmp_path / "home"),
          "--quiet", *sum((["--set", s] for s in sets), [])])
    out = capsys.readouterr().out
    assert all(f"│ {row}" in out for row in ("Ours with meta-test", "RIDNet", "MIRNet"))
    train = {p.name for p in split_heldout(load_sidd_small(root), 0.5)[0] + split_heldout(load_polyu(root), 0.5)[0]}
    stages = [batches for batches in walks.values() if {n for b in batches for n in b} <= train]
    # MTL (2 epochs × ceil(3 / 2) steps) and RIDNet's and MIRNet's supervised stage (1 × 2 steps)
    assert sorted(len(b) for b in stages) == [2, 2, 4]
    for batches in stages:
        for epoch in range(0, len(batches), 2):
            names = [n for b in batches[epoch:epoch + 2] for n in b]
            assert sorted(names) == sorted(train) and [len(b) for b in batches[epoch:epoch + 2]] == [2, 1]
    div2k = [b for b in walks.values() if not {n for x in b for n in x} <= train]
    assert len(div2k) == 1 and len(div2k[0]) == 2  # MAXL: 1 step in each of its two passes
