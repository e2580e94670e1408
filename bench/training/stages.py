"""Training stages and their cache: what a row trains, keyed by what made it.

A stage's checkpoint is keyed by a hash of its inputs (architecture, the recipe fields it uses,
its hyper-parameters, the data, the seed, the key of the stage before it, and the version of the
code that trains it), so rows that share a stage — Table 2's "with" and "without meta-test", Table
3's MAXL rows — train it once. ``stages_for`` says which stages a method trains and with which
key; ``train_stages`` trains the missing ones (each in its nested MLflow run) and loads the rest.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import mlflow
import torch

from bench.adaptation.registry import Adaptation, from_metatest, get
from bench.core.config import Preset, stable_hash
from bench.core.errors import BenchError
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

PRETRAIN_IMPL = 3
"""The version of pre-training's code in its stage key: a change that moves trained numbers bumps it,
so a cache never hands back a checkpoint the current code would not produce (docs/CHANGELOG.md)."""


class StageCache:
    """Checkpoints under ``root/<stage>-<key>.pt``, written atomically (temp file, then rename)."""

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


def run_stage(name: str, payload: dict, model: torch.nn.Module, cache: StageCache, exp_id: str,
              train: Callable[[TrainContext], None], device: torch.device, seed: int, quiet: bool,
              on_validate: Callable | None = None) -> tuple[str, str]:
    """Train one stage in its nested MLflow run, or load it from the cache; returns the stage key
    and the id of the run that trained the checkpoint.

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
        stage_tags = {tags.STAGE: name, tags.STAGE_KEY: key, **(tracking.trial_tags(parent.info.run_id) if parent else {})}
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
    """One stage a row trains: its name (``pretrain`` | ``finetune``) and the payload its key hashes."""

    name: str
    payload: dict

    @property
    def key(self) -> str:
        return stable_hash(self.payload)


def stages_for(spec: MethodSpec, preset: Preset, data_key: str, seed: int, until: str = "finetune") -> list[Stage]:
    """The stages ``spec`` trains under ``preset`` up to ``until``, in order, with their cache keys."""
    recipe = spec.recipe
    # the layout changes how sums are ordered, so a channels-last stage is a different checkpoint
    arch = {"arch": spec.arch, "arch_kwargs": spec.arch_kwargs,
            **({"layout": spec.layout} if spec.layout != "contiguous" else {})}
    stages: list[Stage] = []
    init: Any = {"init": "random", "seed": seed}
    if recipe.pretrain != "none":
        payload = {**arch, "recipe": {k: asdict(recipe)[k] for k in ("pretrain", "pretrain_aux", "grad_loss")},
                   "cfg": preset.pretrain.model_dump(), "data": data_key, "seed": seed, "impl": PRETRAIN_IMPL}
        stages.append(Stage("pretrain", payload))
        init = stable_hash(payload)
    if until == "finetune":
        section = FINETUNERS[recipe.finetune][1]
        payload = {**arch, "init": init, "recipe": asdict(recipe), "cfg": getattr(preset, section).model_dump(),
                   "metatest": preset.metatest.model_dump(), "data": data_key, "seed": seed}
        stages.append(Stage("finetune", payload))
    return stages


def validation_entry(spec: MethodSpec, preset: Preset) -> Adaptation:
    """The adaptation fine-tuning validates after: the preset's meta-test for a meta-learned recipe
    (the official code's selection rule), else none."""
    if spec.recipe.finetune == "mtl" and spec.recipe.metatest:
        return from_metatest(preset.metatest, spec.recipe)
    return get("none")


def train_stages(stages: list[Stage], spec: MethodSpec, model: torch.nn.Module, preset: Preset, data: DataBundle,
                 cache: StageCache, exp_id: str, device: torch.device, seed: int, validation: Adaptation,
                 quiet: bool = False, on_validate: Callable | None = None) -> str:
    """Train or load every stage into ``model``; returns the id of the run that trained the last one.
    ``validation``: the adaptation fine-tuning validates after (``validation_entry``).

    A cached later stage makes the earlier ones unnecessary: training starts from the last stage on disk.
    """
    recipe = spec.recipe

    def trainer(stage: Stage) -> Callable[[TrainContext], None]:
        if stage.name == "pretrain":
            return lambda ctx: pretrain(model, recipe, preset.pretrain, data.pretrain, ctx)
        finetune, section = FINETUNERS[recipe.finetune]
        return lambda ctx: finetune(model, recipe, getattr(preset, section), validation, data.train, data.val, ctx)

    first = max((i for i, s in enumerate(stages) if cache.has(s.name, s.key)), default=0)
    trained_in = ""
    for stage in stages[first:]:
        _, trained_in = run_stage(stage.name, stage.payload, model, cache, exp_id, trainer(stage), device, seed, quiet,
                                  on_validate if stage.name == "finetune" else None)
    return trained_in


def val_split(stage: str) -> str:
    """The validation images a row scored after ``stage`` uses: the fine-tuning data's held-out
    split, or (pre-training only) the validation images with the pre-training noise."""
    return "val" if stage == "finetune" else "val_synthetic"


def reference_split(stages: list[str]) -> str:
    """The validation images of a study's "Noisy input" row: those of its fine-tuned rows, if any."""
    return "val" if "val" in {val_split(s) for s in stages} else "val_synthetic"


__all__ = ["StageCache", "Stage", "stages_for", "train_stages", "run_stage", "validation_entry", "val_split",
           "reference_split", "FINETUNERS", "PRETRAIN_IMPL"]
