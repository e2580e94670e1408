"""One row of a study: pre-training → fine-tuning → evaluation, each stage cached by what made it.

A stage's checkpoint is keyed by a hash of its inputs (architecture, the recipe fields it uses,
its hyper-parameters, the data, the seed, and the key of the stage before it), so rows that share
a stage — Table 2's "with" and "without meta-test", Table 3's MAXL rows — train it once.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import mlflow
import numpy as np
import torch

import methods
from methods import MethodSpec

from . import tags, tracking
from .checkpoints import read_checkpoint
from .config import Preset, stable_hash
from .data import DataBundle
from .errors import BenchError, ConfigError
from .tempfiles import claim_folder, temp_path
from .evaluate import evaluate
from .progress import stage_progress
from .train.context import TrainContext, seed_everything
from .train.mtl import finetune_mtl
from .train.pretrain import pretrain
from .train.supervised import finetune_supervised

if TYPE_CHECKING:
    from .tta.evaluate import Target
    from .tta.registry import Adaptation

FINETUNERS = {"mtl": (finetune_mtl, "finetune"), "supervised": (finetune_supervised, "supervised")}


@dataclass
class RowResult:
    metrics: dict[str, float]  # mean per split and metric, e.g. "test/psnr"
    images: list[dict]  # tidy per-image rows
    params: dict[str, int]
    checkpoint: Path  # the last stage's checkpoint (``model``, ``payload``, ``run_id``, ``history``)
    checkpoint_run: str  # the stage run that trained that checkpoint (its ``run_id``)
    adaptation: "Adaptation | None" = None  # the entry the row ran (after a ``select:`` choice)
    selection: list[dict] = field(default_factory=list)  # one record per ``select:`` candidate (validation)

    @property
    def objective(self) -> float:
        """The trial's value: the validation PSNR — float PSNR pooled over the instances for a row with
        an adaptation entry (what ``bench tune --target gain`` compares), else the 8-bit mean; 0.0
        for a TTA row that scored no validation split (studies read the logged rows, never this value)."""
        return float(self.metrics.get("val/psnr_float", self.metrics.get("val/psnr", 0.0)))


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


def _stage(name: str, payload: dict, model: torch.nn.Module, cache: StageCache, exp_id: str,
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


def run_row(spec: MethodSpec, metatest: bool, preset: Preset, data: DataBundle, seed: int,
            device: torch.device, cache: StageCache, exp_id: str, quiet: bool = False,
            until: str = "finetune", on_validate: Callable | None = None, entry: "Adaptation | None" = None,
            targets: "Sequence[Target] | None" = None, select: dict | None = None,
            select_pairs: Sequence | None = None) -> RowResult:
    """Train (or reuse) the method's stages up to ``until`` and evaluate on val and test.

    With an adaptation ``entry`` (a study row's ``adapt``), the evaluation is
    ``bench.tta.evaluate.evaluate_entry`` on ``targets`` (a TTA study's scenario instances; default:
    the val and test images), with its diagnostic columns; without, today's ``evaluate``. With a
    ``select`` grid the entry's values are first chosen on ``select_pairs`` (default: the val
    images) by ``bench.tta.select.choose``; test instances play no part in that choice.

    ``until="pretrain"`` scores the pre-trained network (Table 1), validating on the validation
    images with the pre-training noise.
    """
    recipe = spec.recipe
    torch.manual_seed(seed)
    model = spec.create().to(device)
    # the layout changes how sums are ordered, so a channels-last stage is a different checkpoint
    arch = {"arch": spec.arch, "arch_kwargs": spec.arch_kwargs,
            **({"layout": spec.layout} if spec.layout != "contiguous" else {})}
    stages: list[tuple[str, dict, Callable[[TrainContext], None]]] = []
    init: Any = {"init": "random", "seed": seed}
    if recipe.pretrain != "none":
        payload = {**arch, "recipe": {k: asdict(recipe)[k] for k in ("pretrain", "pretrain_aux", "grad_loss")},
                   "cfg": preset.pretrain.model_dump(), "data": data.key, "seed": seed,
                   # 2: the recipe's grad_loss switch is honoured (1 always applied L_G); 3: the meta
                   # pass by a forward-mode product, channels-last on CPU (same maths, other rounding)
                   "impl": 3}
        stages.append(("pretrain", payload, lambda ctx: pretrain(model, recipe, preset.pretrain, data.pretrain, ctx)))
        init = stable_hash(payload)
    if until == "finetune":
        finetune, section = FINETUNERS[recipe.finetune]
        cfg = getattr(preset, section)
        payload = {**arch, "init": init, "recipe": asdict(recipe), "cfg": cfg.model_dump(),
                   "metatest": preset.metatest.model_dump(), "data": data.key, "seed": seed}
        stages.append(("finetune", payload,
                       lambda ctx: finetune(model, recipe, cfg, preset.metatest, data.train, data.val, ctx)))
    # A cached later stage makes the earlier ones unnecessary: start from the last one on disk.
    first = max((i for i, (name, p, _) in enumerate(stages) if cache.has(name, stable_hash(p))), default=0)
    for name, p, train in stages[first:]:
        _, trained_in = _stage(name, p, model, cache, exp_id, train, device, seed, quiet,
                               on_validate if name == "finetune" else None)
    last_name, last_payload, _ = stages[-1]
    images, metrics = [], {}
    val = getattr(data, val_split(until))
    if entry is not None:
        from .tta.evaluate import Target, evaluate_entry, row_metrics

        active = mlflow.active_run()
        label = f"{active.info.run_name}: " if active else ""
        selection: list[dict] = []
        if select:
            from .tta.select import adaptations_needed, choose

            pairs = select_pairs if select_pairs is not None else val
            with stage_progress(adaptations_needed(entry, select, len(pairs)), f"{label}select {entry.name} on val",
                                quiet) as advance:
                entry, selection = choose(model, entry, select, pairs, device, seed, progress=advance)
        targets = targets if targets is not None else [Target("val", "", val), Target("test", "", data.test)]
        with stage_progress(sum(len(t.pairs) for t in targets), f"{label}adapt ({entry.name})", quiet) as advance:
            rows = evaluate_entry(model, entry, targets, device, seed, progress=advance)
        images = [{**r, "metatest": entry.learns} for r in rows]
        return RowResult(row_metrics(images), images, spec.with_recipe(metatest=metatest).param_counts(model),
                         cache.path(last_name, stable_hash(last_payload)), trained_in, entry, selection)
    for split, pairs in (("val", val), ("test", data.test)):
        rows = evaluate(model, recipe, pairs, preset.metatest, metatest, device)
        for r in rows:
            images.append({"split": split, "metatest": metatest, **r})
        for m in ("psnr", "ssim", "ssim_gauss"):
            metrics[f"{split}/{m}"] = float(np.mean([r[m] for r in rows]))
    return RowResult(metrics, images, spec.with_recipe(metatest=metatest).param_counts(model),
                     cache.path(last_name, stable_hash(last_payload)), trained_in)


def val_split(stage: str) -> str:
    """The validation images a row scored after ``stage`` uses: the fine-tuning data's held-out
    split, or (pre-training only) the validation images with the pre-training noise."""
    return "val" if stage == "finetune" else "val_synthetic"


def reference_split(stages: list[str]) -> str:
    """The validation images of a study's "Noisy input" row: those of its fine-tuned rows, if any."""
    return "val" if "val" in {val_split(s) for s in stages} else "val_synthetic"


def resolve_method(name: str, recipe_overrides: dict | None = None) -> MethodSpec:
    spec = methods.get(name)
    return spec.with_recipe(**recipe_overrides) if recipe_overrides else spec


def meta_learned_method(name: str, refusal: str) -> MethodSpec:
    """The registered method ``name``, which must be meta-learned (MTL); else ``ConfigError(refusal)``."""
    try:
        spec = resolve_method(name)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None
    if spec.recipe.finetune != "mtl":
        raise ConfigError(refusal)
    return spec
