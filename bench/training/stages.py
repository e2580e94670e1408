"""Training stages and their cache: what a row trains, keyed by what made it.

A stage's checkpoint is keyed by a hash of its inputs (architecture, the recipe fields it uses,
its hyper-parameters, the data, the seed, the key of the stage before it, and a fingerprint of the
code that builds the network and trains it), so rows that share a stage — Table 2's "with" and
"without meta-test", Table 3's MAXL rows — train it once, and changed code trains again.
``stages_for`` says which stages a method trains and with which key; ``train_stages`` trains the
missing ones (each in its nested MLflow run), loads the rest and says which it did and why
(docs/caching.md).

Why one module of ~530 lines: a stage's key, its cache lookup and its training must agree on what
makes a stage; one module keeps that contract in one place.
"""
from __future__ import annotations

import fcntl
import functools
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import mlflow
import torch

from bench.adaptation.registry import Adaptation, from_metatest, get
from bench.core.config import Preset, stable_hash
from bench.core.errors import BenchError
from bench.core.fingerprint import (
    distribution_of,
    function_digest,
    git_state,
    module_digest,
    module_label,
)
from bench.core.tempfiles import claim_folder, temp_path
from bench.data import DataBundle
from bench.runtime import tags, tracking
from bench.runtime.checkpoints import read_checkpoint
from bench.training.context import TrainContext, seed_everything
from bench.training.mtl import finetune_mtl
from bench.training.pretrain import pretrain
from bench.training.supervised import finetune_supervised
from methods import MethodSpec

FINETUNERS = {"mtl": (finetune_mtl, "finetune"), "supervised": (finetune_supervised, "supervised")}
"""Recipe ``finetune`` → (the trainer, the preset section that configures it)."""

STAGE_CODE: dict[str, tuple[str, ...]] = {
    "pretrain": ("bench.training.pretrain", "bench.training.loop", "bench.core.losses", "bench.data.sampler"),
    "mtl": ("bench.training.mtl", "bench.training.loop", "bench.adaptation.inner", "bench.core.losses",
            "bench.data.sampler", "bench.adaptation.run", "bench.adaptation.evaluate"),
    "supervised": ("bench.training.supervised", "bench.training.loop", "bench.core.losses", "bench.data.sampler",
                   "bench.adaptation.evaluate"),
}
"""Trainer (``pretrain`` or a recipe's ``finetune``) → the modules whose code its stage key
fingerprints: the trainer, its loop, the losses, the patch sampler, and for fine-tuning the
validation it selects the kept epoch by (docs/caching.md)."""

LEGACY_PRETRAIN_IMPL = 3
"""The hand-bumped version that keyed pre-training stages before code fingerprints; kept only to
find caches written then (``Stage.legacy_key``), which ``BENCH_REUSE_STALE`` may adopt."""

REUSE_STALE_ENV = "BENCH_REUSE_STALE"
"""``1``/``all``: reuse a cached stage whatever code changed since; a comma-separated list of
module files (``methods/ours.py``) or module names: reuse it when only those changed."""


class StageCache:
    """Checkpoints under ``root/<stage>-<key>.pt``, written atomically (temp file, then rename),
    each with a note ``<stage>-<key>.json`` saying which code made it (``code``, its digest, the
    git commit and dirty flag at save time) and the ``stem`` that finds it when that code changes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        why = claim_folder(root)  # also removes checkpoints a killed process was writing
        if why is not None:
            raise BenchError(f"{root}: the checkpoint cache cannot be written ({why}); "
                             f"free space or point --home at a writable folder")

    def path(self, stage: str, key: str, partial: bool = False) -> Path:
        """The stage checkpoint, or (``partial``) the in-stage one of a stage still being trained."""
        return self.root / f"{stage}-{key}{'.partial' if partial else ''}.pt"

    def has(self, stage: str, key: str) -> bool:
        """Whether the stage is trained, or partly trained, on disk."""
        return self.path(stage, key).exists() or self.path(stage, key, partial=True).exists()

    @contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        """Held while a stage is looked up or trained: a second worker waits, then reuses it."""
        with open(self.root / f"{stage}-{key}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self, stage: str, key: str, partial: bool = False) -> dict | None:
        path = self.path(stage, key, partial)
        if not path.exists():
            return None
        return read_checkpoint(path, weights_only=False,  # the harness's own file: it holds RNG states
                               hint="the stage checkpoint is corrupted: delete it to train that stage again")

    def save(self, stage: str, key: str, payload: dict, partial: bool = False) -> Path:
        path = self.path(stage, key, partial)
        tmp = temp_path(path)
        with tracking.disk_errors(where=path):  # torch.save reports a full disk as a RuntimeError
            try:
                torch.save(payload, tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        if not partial:
            self.path(stage, key, partial=True).unlink(missing_ok=True)
        return path

    def note_path(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key}.json"

    def note(self, stage: str, key: str) -> dict | None:
        """The note of a cached stage; None when it has none (written before notes) or it is unreadable."""
        try:
            return json.loads(self.note_path(stage, key).read_text())
        except (OSError, ValueError):
            return None

    def write_note(self, stage: str, key: str, note: dict) -> None:
        path = self.note_path(stage, key)
        tmp = temp_path(path)
        with tracking.disk_errors(where=path):
            try:
                tmp.write_text(json.dumps(note, indent=1, sort_keys=True, default=str))
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)

    def stale(self, stage: Stage) -> list[dict]:
        """Cached checkpoints of this stage made by other code (same ``stem``, other key), newest
        first; a checkpoint from before code fingerprints (``legacy_key``) last, as ``{"legacy": True}``."""
        found = []
        for path in self.root.glob(f"{stage.name}-*.json"):
            try:
                note = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if note.get("stem") == stage.stem and note.get("key") != stage.key \
                    and self.path(stage.name, note.get("key", "")).exists():
                found.append(note)
        found.sort(key=lambda n: n.get("saved", ""), reverse=True)
        if stage.legacy_key and self.path(stage.name, stage.legacy_key).exists() \
                and self.note(stage.name, stage.legacy_key) is None:
            found.append({"key": stage.legacy_key, "legacy": True})
        return found

    def pin(self, stage: Stage, old: dict, because: list[str]) -> None:
        """Make the cached checkpoint ``old`` (a ``stale`` note) this stage's, across a code change
        the user declared harmless: a hard link (a copy where links fail), its note saying so."""
        src, dst = self.path(stage.name, old["key"]), self.path(stage.name, stage.key)
        tmp = temp_path(dst)
        with tracking.disk_errors(where=dst):
            try:
                try:
                    os.link(src, tmp)
                except OSError:
                    import shutil

                    shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
            finally:
                tmp.unlink(missing_ok=True)
        self.write_note(stage.name, stage.key, {
            **{k: v for k, v in old.items() if k in ("code", "code_digest", "commit", "dirty", "git", "saved")},
            "stage": stage.name, "key": stage.key, "stem": stage.stem, "init": stage.payload.get("init"),
            "pinned_from": old["key"], "pinned_because": because, "code_now": code_digest(stage.code)})


def run_stage(name: str, payload: dict, model: torch.nn.Module, cache: StageCache, exp_id: str,
              train: Callable[[TrainContext], None], device: torch.device, seed: int, quiet: bool,
              on_validate: Callable | None = None, note: dict | None = None,
              extra_tags: dict | None = None) -> tuple[str, str]:
    """Train one stage in its nested MLflow run, or load it from the cache; returns the stage key
    and the id of the run that trained the checkpoint. ``note``: what the cache's note on a newly
    trained checkpoint says besides the git state (``stage_note``); ``extra_tags``: on the stage run.

    Resuming after a kill: a stage with an in-stage checkpoint goes on from it in the run that
    started it; a row whose run already has this stage's nested run does not get a second one.
    """
    key = stable_hash(payload)
    parent = mlflow.active_run()
    with cache.lock(name, key):
        cached = cache.load(name, key)
        resume = None if cached is not None else cache.load(name, key, partial=True)
        earlier = tracking.child_runs(parent.info.run_id, exp_id, key) if parent else []
        if cached is not None and any(r.info.status == "FINISHED" for r in earlier):
            model.load_state_dict(cached["model"])  # this row's run already records the stage
            return key, cached.get("run_id", "")
        run_id = resume["run_id"] if resume is not None else None
        for r in earlier:  # left RUNNING by a killed process and not resumed: end it
            if r.info.run_id != run_id and r.info.status == "RUNNING":
                tracking.end_orphan(r.info.run_id)
        # the trial that runs this stage now (a stage run reopened for another row is live while it runs)
        stage_tags = {tags.STAGE: name, tags.STAGE_KEY: key, **(extra_tags or {}),
                      **(tracking.trial_tags(parent.info.run_id) if parent else {})}
        # a stage another row's run started and a kill cut short: finish it in that run, then record
        # it in this row's run as reused, so that every row has its stage child
        foreign = run_id is not None and parent is not None and run_id not in {r.info.run_id for r in earlier}
        if resume is not None:
            stage_tags[tags.RESUMED_FROM_EPOCH] = resume["epoch"]
        with tracking.run(name, exp_id, nested=True, tags=stage_tags, run_id=run_id) as run:
            if resume is None:
                run.params({"stage_key": key, **payload})
            if cached is not None:
                model.load_state_dict(cached["model"])
                _log_reused(run, cached)
                return key, cached.get("run_id", "")
            rng = seed_everything(int(stable_hash([seed, name], 8), 16))
            ctx = TrainContext(device=device, rng=rng, log=run.metrics, image=run.image, quiet=quiet, resume=resume,
                               label=parent.info.run_name if parent else "",
                               save_state=lambda state: cache.save(name, key, {**state, "run_id": run.id}, partial=True))
            if on_validate is not None:
                ctx.on_validate = on_validate
            train(ctx)
            done = {"model": model.state_dict(), "history": ctx.history, "run_id": run.id, "payload": payload}
            path = cache.save(name, key, done)
            cache.write_note(name, key, {**(note or {}), "stage": name, "key": key, **git_state(),
                                         "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            run.tags({tags.REUSED: "false"})
            run.artifact(path, "checkpoints")
        if foreign:
            stage_tags.pop(tags.RESUMED_FROM_EPOCH, None)
            with tracking.run(name, exp_id, nested=True, tags=stage_tags) as mine:
                mine.params({"stage_key": key, **payload})
                _log_reused(mine, done)
        return key, done["run_id"]


def _log_reused(run: tracking.Run, cached: dict) -> None:
    """A stage run that loaded a checkpoint another run trained: the tags say which, the curves are copied."""
    run.tags({tags.REUSED: "true", tags.TRAINED_IN_RUN: cached.get("run_id", "")})
    for rec in cached.get("history", []):
        run.metrics({k: v for k, v in rec.items() if k != "step"}, rec["step"])


@dataclass(frozen=True)
class Stage:
    """One stage a row trains: its name (``pretrain`` | ``finetune``) and the payload its key hashes.

    ``payload["code"]`` is the fingerprint of the code behind it; ``stem`` hashes everything else
    (with the stage before it by its own stem), so a cached stage with this stem and another key
    is this stage made by other code. ``legacy_key``: its key before code fingerprints.
    """

    name: str
    payload: dict
    stem: str = ""
    legacy_key: str = ""

    @property
    def key(self) -> str:
        return stable_hash(self.payload)

    @property
    def code(self) -> dict[str, str]:
        return self.payload.get("code", {})


def code_digest(code: dict[str, str]) -> str:
    """One short fingerprint of a stage's code dict (what `bench run` prints and tags)."""
    return stable_hash(code, 12)


_NETWORK_MODULES: dict[tuple, tuple[str, ...]] = {}  # (build, arch_kwargs hash, layout) → modules


def network_modules(spec: MethodSpec) -> tuple[str, ...]:
    """The modules that define a class of ``spec``'s network (its submodules' classes and their
    bases, torch's own left out), found by building it once per process."""
    cache_key = (spec.build, stable_hash(spec.arch_kwargs), spec.layout)
    if cache_key not in _NETWORK_MODULES:
        try:  # on the meta device: no memory, no init cost, even for MIRNet
            with torch.device("meta"):
                model = spec.create()
        except Exception:
            model = spec.create()
        found = set()
        for m in model.modules():
            for cls in type(m).__mro__:
                if cls.__module__.split(".", 1)[0] not in ("torch", "builtins", "typing", "abc"):
                    found.add(cls.__module__)
        _NETWORK_MODULES[cache_key] = tuple(sorted(found))
    return _NETWORK_MODULES[cache_key]


def method_code(spec: MethodSpec) -> dict[str, str]:
    """Fingerprint of the code that builds ``spec``'s network: every module defining a class of
    the network (whole), the build function (alone, when its module defines no network class:
    a registry file's other entries do not retrain it), and the version of any other
    distribution that installed one of them (a plugin)."""
    build = spec.build
    while isinstance(build, functools.partial):
        build = build.func
    modules = set(network_modules(spec))
    code: dict[str, str] = {}
    home = getattr(build, "__module__", None) or type(build).__module__
    if home not in modules:
        digest = function_digest(build)
        if digest is None:
            modules.add(home)
        else:
            code[f"{home}.{getattr(build, '__qualname__', 'build')}"] = digest
    for name in sorted(modules):
        code[module_label(name)] = module_digest(name)
        dist = distribution_of(name)
        if dist is not None:
            code[f"dist.{dist[0]}"] = dist[1]
    return code


def trainer_code(trainer: str) -> dict[str, str]:
    """Fingerprint of the training code a stage runs (``STAGE_CODE``)."""
    return {module_label(m): module_digest(m) for m in STAGE_CODE[trainer]}


def stages_for(spec: MethodSpec, preset: Preset, data_key: str, seed: int, until: str = "finetune") -> list[Stage]:
    """The stages ``spec`` trains under ``preset`` up to ``until``, in order, with their cache keys."""
    recipe = spec.recipe
    # the layout changes how sums are ordered, so a channels-last stage is a different checkpoint
    arch = {"arch": spec.arch, "arch_kwargs": spec.arch_kwargs,
            **({"layout": spec.layout} if spec.layout != "contiguous" else {})}
    net = method_code(spec)
    stages: list[Stage] = []
    init: Any = {"init": "random", "seed": seed}
    init_stem, init_legacy = init, init
    if recipe.pretrain != "none":
        base = {**arch, "recipe": {k: asdict(recipe)[k] for k in ("pretrain", "pretrain_aux", "grad_loss")},
                "cfg": preset.pretrain.model_dump(), "data": data_key, "seed": seed}
        payload = {**base, "code": {**net, **trainer_code("pretrain")}}
        legacy = stable_hash({**base, "impl": LEGACY_PRETRAIN_IMPL})
        stages.append(Stage("pretrain", payload, stable_hash(base), legacy))
        init, init_stem, init_legacy = stable_hash(payload), stable_hash(base), legacy
    if until == "finetune":
        section = FINETUNERS[recipe.finetune][1]
        base = {**arch, "recipe": asdict(recipe), "cfg": getattr(preset, section).model_dump(),
                "metatest": preset.metatest.model_dump(), "data": data_key, "seed": seed}
        payload = {**base, "init": init, "code": {**net, **trainer_code(recipe.finetune)}}
        stages.append(Stage("finetune", payload, stable_hash({**base, "init": init_stem}),
                            stable_hash({**base, "init": init_legacy})))
    return stages


def validation_entry(spec: MethodSpec, preset: Preset) -> Adaptation:
    """The adaptation fine-tuning validates after: the preset's meta-test for a meta-learned recipe
    (the official code's selection rule), else none."""
    if spec.recipe.finetune == "mtl" and spec.recipe.metatest:
        return from_metatest(preset.metatest, spec.recipe)
    return get("none")


def stage_note(stage: Stage) -> dict:
    """What the cache's note on ``stage``'s checkpoint records besides the git state at save time."""
    return {"stem": stage.stem, "init": stage.payload.get("init"), "code": stage.code,
            "code_digest": code_digest(stage.code)}


def stale_changes(stage: Stage, old: dict) -> list[str]:
    """What differs between ``stage`` and a cached ``old`` one of the same stem: the module files
    or functions whose code changed (``methods/ours.py``), ``init`` when the stage it starts
    from changed, ``unknown`` for a checkpoint cached before code fingerprints."""
    if old.get("legacy") or "code" not in old:
        return ["unknown"]
    was, now = old["code"], stage.code
    changed = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
    if old.get("init") != stage.payload.get("init"):
        changed.append("init")
    return changed


def why_stale(changes: list[str], old: dict) -> str:
    """``changes`` (``stale_changes``) as users read them."""
    if changes == ["unknown"]:
        return "the cached stage predates code fingerprints, so the code that made it is unknown"
    parts = [c for c in changes if c != "init"]
    text = []
    if parts:
        text.append(f"code of {', '.join(parts)} changed since the cached stage")
    if "init" in changes:
        text.append("the stage it starts from changed")
    return "; ".join(text) + f" ({old['key'][:8]}, {origin(old)})"


def origin(note: dict | None) -> str:
    """Which code a cached stage came from: its code fingerprint and the git commit at save time."""
    if not note or "code_digest" not in note:
        return "code unknown (cached before code fingerprints)"
    where = (f"commit {note['commit'][:10]}{' with local changes' if note.get('dirty') == 'true' else ''}"
             if "commit" in note else f"git {note.get('git', 'unavailable')}")
    return f"code {note['code_digest']} at {where}"


def reuse_stale_setting() -> bool | set[str]:
    """``BENCH_REUSE_STALE``: False (unset, empty or 0), True (``1``, ``all``, ``yes``) or the set
    of module files / module names whose changes may be ignored."""
    raw = os.environ.get(REUSE_STALE_ENV, "").strip()
    if raw.lower() in ("", "0", "no", "false"):
        return False
    if raw.lower() in ("1", "all", "yes", "true"):
        return True
    out = set()
    for item in (s.strip() for s in raw.split(",")):
        if item:
            out.add(item)
            out.add(item.replace(".", "/") + ".py" if not item.endswith(".py") else item)
    return out


def may_reuse(changes: list[str], setting: bool | set[str], init_pinned_from: str | None, old: dict) -> bool:
    """Whether ``BENCH_REUSE_STALE`` lets a stale stage stand in for this one: every change it has
    is named (a module name also covers its functions; a plugin's version is ``dist.<name>``), and
    a changed ``init`` is the stage before it pinned from ``old``'s own start."""
    if setting is True:
        return True
    if not setting:
        return False
    for c in changes:
        if c == "init":
            if init_pinned_from is None or old.get("init") != init_pinned_from:
                return False
        elif c == "unknown" or not (c in setting or any(c.startswith(n + ".") for n in setting)):
            return False
    return True


def say(text: str) -> None:
    """A line about the cache, on stdout beside the table it explains (also under ``--quiet``: it
    says what the numbers are made of; stderr stays for progress and the one-line error)."""
    print(f"cache: {text}", flush=True)


def train_stages(stages: list[Stage], spec: MethodSpec, model: torch.nn.Module, preset: Preset, data: DataBundle,
                 cache: StageCache, exp_id: str, device: torch.device, seed: int, validation: Adaptation,
                 quiet: bool = False, on_validate: Callable | None = None) -> str:
    """Train or load every stage into ``model``; returns the id of the run that trained the last one.
    ``validation``: the adaptation fine-tuning validates after (``validation_entry``).

    A cached later stage makes the earlier ones unnecessary: training starts from the last stage on disk.
    A stage cached under other code is trained again, unless ``BENCH_REUSE_STALE`` allows it
    (docs/caching.md); each stage's fate and its reason go to stdout and to its run's tags.
    """
    recipe = spec.recipe

    def trainer(stage: Stage) -> Callable[[TrainContext], None]:
        if stage.name == "pretrain":
            return lambda ctx: pretrain(model, recipe, preset.pretrain, data.pretrain, ctx)
        finetune, section = FINETUNERS[recipe.finetune]
        return lambda ctx: finetune(model, recipe, getattr(preset, section), validation, data.train, data.val, ctx)

    active = mlflow.active_run()
    label = f"{active.info.run_name}: " if active else ""
    setting = reuse_stale_setting()
    why: dict[str, str] = {}  # stage name → why it is trained again
    pinned: dict[str, str] = {}  # stage name → the key it was pinned from
    for stage in stages:
        if cache.has(stage.name, stage.key):
            continue
        stale = cache.stale(stage)
        if not stale:
            continue
        prev = pinned.get("pretrain") if stage.name == "finetune" else None
        usable = [(old, stale_changes(stage, old)) for old in stale]
        chosen = next(((o, c) for o, c in usable if may_reuse(c, setting, prev, o)), None)
        if chosen is not None:
            with cache.lock(stage.name, stage.key):
                if not cache.has(stage.name, stage.key):
                    cache.pin(stage, *chosen)
            pinned[stage.name] = chosen[0]["key"]
            say(f"{label}{stage.name} {stage.key[:8]}: reusing {chosen[0]['key'][:8]} across a change you allowed "
                f"({REUSE_STALE_ENV}): {why_stale(chosen[1], chosen[0])}")
        else:
            old, changes = usable[0]
            names = ",".join(c for c in changes if c not in ("init", "unknown"))
            if changes == ["init"]:
                hint = ""  # it starts from a stage trained again: its own code is the same
            elif names and "unknown" not in changes and "init" not in changes:
                hint = f"; {REUSE_STALE_ENV}={names} reuses it"
            else:
                hint = f"; {REUSE_STALE_ENV}=1 reuses it"
            why[stage.name] = why_stale(changes, old) + hint

    first = max((i for i, s in enumerate(stages) if cache.has(s.name, s.key)), default=0)
    trained_in = ""
    for stage in stages[first:]:
        cached = cache.path(stage.name, stage.key).exists()
        extra = {tags.CODE: code_digest(stage.code)}
        if cached:
            note = cache.note(stage.name, stage.key)
            extra[tags.CACHED_CODE] = origin(note)
            pin = ""
            if note and note.get("pinned_from"):
                extra[tags.PINNED_FROM] = note["pinned_from"]
                pin = f" (pinned from {note['pinned_from'][:8]}: {', '.join(note.get('pinned_because', []))})"
            say(f"{label}reused {stage.name} {stage.key[:8]}: {origin(note)}{pin}")
        elif stage.name in why:
            extra[tags.RETRAINED_BECAUSE] = why[stage.name][:500]
            say(f"{label}training {stage.name} {stage.key[:8]} again: {why[stage.name]}")
        elif cache.path(stage.name, stage.key, partial=True).exists():
            say(f"{label}resuming {stage.name} {stage.key[:8]} from its last in-stage checkpoint")
        else:
            say(f"{label}training {stage.name} {stage.key[:8]}: not in the cache")
        _, trained_in = run_stage(stage.name, stage.payload, model, cache, exp_id, trainer(stage), device, seed, quiet,
                                  on_validate if stage.name == "finetune" else None, note=stage_note(stage),
                                  extra_tags=extra)
    return trained_in


def val_split(stage: str) -> str:
    """The validation images a row scored after ``stage`` uses: the fine-tuning data's held-out
    split, or (pre-training only) the validation images with the pre-training noise."""
    return "val" if stage == "finetune" else "val_synthetic"


def reference_split(stages: list[str]) -> str:
    """The validation images of a study's "Noisy input" row: those of its fine-tuned rows, if any."""
    return "val" if "val" in {val_split(s) for s in stages} else "val_synthetic"


__all__ = ["StageCache", "Stage", "stages_for", "train_stages", "run_stage", "validation_entry", "val_split",
           "reference_split", "FINETUNERS", "STAGE_CODE", "REUSE_STALE_ENV", "method_code",
           "trainer_code", "network_modules", "code_digest", "stage_note", "stale_changes", "why_stale", "origin",
           "reuse_stale_setting", "may_reuse"]
