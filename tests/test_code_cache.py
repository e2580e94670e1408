"""A stage cache that notices code (#27 item 5, docs/caching.md).

A temporary plugin (a module file and a distribution declaring it as a ``ttaid_bench.methods``
entry point, under ``tmp_path``) is trained by `bench run` with the smoke preset: an unchanged rerun reuses its stage, a real change to
the module trains it again and says why, a comment-only change does not, and ``BENCH_REUSE_STALE``
keeps reusing across a change the user names. Each run is a new study name on one home, so the
stage cache (shared by the home's studies) is what decides.
"""
from __future__ import annotations

import importlib
import re
import sys
import textwrap
from pathlib import Path

import pytest

import methods
from bench.core import fingerprint
from bench.runtime import tags

NET = '''
"""A tiny residual denoiser."""
from torch import nn

from methods.blocks import SingleTaskModel


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)

    def forward(self, x):
        return x - self.conv(x)


def build() -> nn.Module:
    return SingleTaskModel(TinyNet())
'''
SETS = ["--set", "supervised.epochs=1", "--set", "supervised.steps_per_epoch=1", "--set", "data.eval_crop=16",
        "--set", "data.eval_repeats=1"]


class Plugin:
    """A temporary plugin: the module file and a distribution declaring it in the
    ``ttaid_bench.methods`` entry-point group, found through the path like an installed one."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.name = f"tinynet_{abs(hash(str(root))) % 10**8}"
        self.root = root
        self.path = root / f"{self.name}.py"
        self.mp = monkeypatch
        self.path.write_text(NET)
        dist = root / f"{self.name}_plugin-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {self.name}-plugin\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[ttaid_bench.methods]\ntinynet = {self.name}:build\n")
        monkeypatch.syspath_prepend(str(root))
        self.register()

    def edit(self, old: str, new: str) -> None:
        text = self.path.read_text()
        assert old in text
        self.path.write_text(text.replace(old, new))
        self.register()

    def register(self) -> None:
        """Forget what was discovered and imported, as a new process would."""
        importlib.invalidate_caches()
        sys.modules.pop(self.name, None)
        methods.refresh()
        assert "tinynet" in methods.names()


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BENCH_REUSE_STALE", raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (tmp_path / "plugin").mkdir()
    made = Plugin(tmp_path / "plugin", monkeypatch)
    yield made
    sys.modules.pop(made.name, None)
    if str(made.root) in sys.path:
        sys.path.remove(str(made.root))
    importlib.invalidate_caches()
    methods.refresh()


def cache_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("cache: ")]


def test_bench_run_reuses_unchanged_code_and_retrains_changed_code(plugin, tmp_path, run_cli, mlflow_client,
                                                                   monkeypatch):
    home = tmp_path / "home"
    study = tmp_path / "studies"
    study.mkdir()

    def bench_run(n: int, whole: bool = False) -> str:
        path = study / f"code{n}.yaml"
        path.write_text("title: code\nrows:\n  - {name: T, method: tinynet}\n")
        code, out, err = run_cli("run", path, "--preset", "smoke", "--home", home, "--quiet", *SETS)
        assert code == 0, err[-2000:]
        return out + err if whole else "\n".join(cache_lines(out))

    first = bench_run(1)
    assert re.search(r"training finetune \w{8}: not in the cache", first), first

    again = bench_run(2)  # unchanged: reused, with the code and commit it came from
    assert "reused finetune" in again and "training" not in again, again
    assert re.search(r"code \w{12} at (commit \w{10}|git unavailable)", again), again

    plugin.edit("return x - self.conv(x)", "return x - 0.5 * self.conv(x)")  # a real change
    changed = bench_run(3)
    assert "training finetune" in changed and f"code of {plugin.name}.py changed since the cached stage" in changed, \
        changed
    assert f"BENCH_REUSE_STALE={plugin.name}.py reuses it" in changed
    # the first study's row is complete but outdated: it runs again (on the stage study 3 trained) and says why
    old = bench_run(1, whole=True)
    assert "note: row 'T' seed 0 ran with stages the current code keys differently" in old, old
    assert "it runs again" in old and "reused finetune" in old, old
    again_old = bench_run(1, whole=True)  # now current: nothing to say, nothing to run
    assert "note:" not in again_old and not cache_lines(again_old), again_old

    plugin.edit("        return x - 0.5", "        # scaled residual\n\n        return x - 0.5")  # a comment
    plugin.edit('"""A tiny residual denoiser."""', '"""A tiny residual denoiser, described differently."""')
    comment = bench_run(4)
    assert "reused finetune" in comment and "training" not in comment, comment

    plugin.edit("return x - 0.5 * self.conv(x)", "return x - 0.25 * self.conv(x)")  # real, but declared harmless
    monkeypatch.setenv("BENCH_REUSE_STALE", f"{plugin.name}.py")
    pinned = bench_run(5)
    assert "across a change you allowed" in pinned and "training" not in pinned, pinned
    monkeypatch.delenv("BENCH_REUSE_STALE")
    assert "reused finetune" in bench_run(6)  # the pinned key stays

    client = mlflow_client(home)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=500)
    assert runs and all(tags.PLUGINS in r.data.tags and (tags.GIT_COMMIT in r.data.tags or tags.GIT in r.data.tags)
                        for r in runs)
    stage_runs = [r for r in runs if r.data.tags.get(tags.STAGE) == "finetune"]
    assert sum(tags.RETRAINED_BECAUSE in r.data.tags for r in stage_runs) == 1
    assert all(tags.CODE in r.data.tags for r in stage_runs)
    assert sum(tags.PINNED_FROM in r.data.tags for r in stage_runs) == 2  # run 5 and run 6 load the pinned stage


def test_source_digest_ignores_comments_docstrings_and_layout():
    digest = fingerprint.source_digest
    code = textwrap.dedent('''
        def f(x):
            """Doc."""
            return x + 1
    ''')
    same = textwrap.dedent('''
        # a comment


        def f(x):  # another
            """Other doc, longer."""

            return (x
                    + 1)
    ''')
    assert digest(code) == digest(same)
    assert digest(code) != digest(code.replace("x + 1", "x + 2"))
    assert digest(code) != digest(code.replace("def f", "def g"))
    assert digest("def (") != digest("def ((")  # unparsable: hashed as text


def test_every_stage_code_module_exists():
    from bench.training.stages import STAGE_CODE

    for trainer, names in STAGE_CODE.items():
        for name in names:
            assert fingerprint.module_file(name) is not None, f"{trainer}: {name} has no source file"


def test_method_code_covers_network_classes_and_the_build_function():
    from bench.training.stages import method_code

    ours = method_code(methods.get("ours"))
    assert {"methods/ours.py", "methods/blocks.py"} <= set(ours)
    ridnet = method_code(methods.get("ridnet"))  # built in the registry: the function alone, not the file
    assert "methods/ridnet.py" in ridnet and "methods/registry.py" not in ridnet
    assert any(k.startswith("methods.registry.build_ridnet") for k in ridnet)


def test_git_absent_is_a_tag_not_a_failure(monkeypatch, tmp_path):
    fingerprint.git_state.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    try:
        assert fingerprint.git_state()["git"].startswith("unavailable")
    finally:
        fingerprint.git_state.cache_clear()
    assert fingerprint.git_state(str(tmp_path)).get("git", "").startswith("unavailable")  # not a repository


def test_legacy_cache_is_retrained_unless_allowed(tmp_path, monkeypatch):
    from bench.core.config import load_preset
    from bench.training.stages import (
        StageCache,
        may_reuse,
        reuse_stale_setting,
        stages_for,
        stale_changes,
    )

    (stage,) = stages_for(methods.get("ridnet"), load_preset("smoke"), "data", 0)
    cache = StageCache(tmp_path)
    cache.path(stage.name, stage.legacy_key).write_bytes(b"old")  # a checkpoint from before fingerprints
    (old,) = cache.stale(stage)
    changes = stale_changes(stage, old)
    assert changes == ["unknown"]
    monkeypatch.setenv("BENCH_REUSE_STALE", "methods/ridnet.py")
    assert not may_reuse(changes, reuse_stale_setting(), None, old)
    monkeypatch.setenv("BENCH_REUSE_STALE", "1")
    assert may_reuse(changes, reuse_stale_setting(), None, old)
    cache.pin(stage, old, changes)
    assert cache.path(stage.name, stage.key).read_bytes() == b"old"
    assert cache.note(stage.name, stage.key)["pinned_from"] == stage.legacy_key


def test_a_pinned_pretraining_stage_carries_its_finetuning_stage(tmp_path, monkeypatch):
    """A pre-training code change allowed by BENCH_REUSE_STALE pins pre-training; fine-tuning,
    whose only change is that start, is pinned with it — and without the setting both retrain."""
    from bench.core.config import load_preset
    from bench.training import stages
    from bench.training.stages import (
        StageCache,
        may_reuse,
        reuse_stale_setting,
        stage_note,
        stages_for,
        stale_changes,
    )

    old_stages = stages_for(methods.get("ours"), load_preset("smoke"), "data", 0)
    cache = StageCache(tmp_path)
    for st in old_stages:
        cache.path(st.name, st.key).write_bytes(b"weights")
        cache.write_note(st.name, st.key, {**stage_note(st), "stage": st.name, "key": st.key, "saved": "then"})
    real = stages.trainer_code

    def edited(trainer: str) -> dict[str, str]:  # bench/training/pretrain.py as if its code had changed
        code = real(trainer)
        return {**code, "bench/training/pretrain.py": "edited"} if trainer == "pretrain" else code

    monkeypatch.setattr(stages, "trainer_code", edited)
    pre, fine = stages_for(methods.get("ours"), load_preset("smoke"), "data", 0)
    assert pre.key != old_stages[0].key and fine.key != old_stages[1].key and fine.code == old_stages[1].code
    (old_pre,), (old_fine,) = cache.stale(pre), cache.stale(fine)
    assert stale_changes(pre, old_pre) == ["bench/training/pretrain.py"]
    assert stale_changes(fine, old_fine) == ["init"]
    assert not may_reuse(["init"], reuse_stale_setting(), None, old_fine)  # unset: retrain
    monkeypatch.setenv("BENCH_REUSE_STALE", "bench/training/pretrain.py")
    setting = reuse_stale_setting()
    assert may_reuse(stale_changes(pre, old_pre), setting, None, old_pre)
    assert may_reuse(["init"], setting, old_pre["key"], old_fine)  # its start was pinned from its own start
    assert not may_reuse(["init"], setting, "some other key", old_fine)
