"""Validated configuration: a preset (hyper-parameters + data) with ``--set key=value`` overrides.

Presets live in ``studies/presets.yaml`` (``STUDIES_DIR``); every field is checked by pydantic (unknown keys, wrong
types and out-of-range values are errors), and the resolved config is frozen and hashed so that
stage checkpoints can be keyed by exactly what produced them.
"""
from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_serializer,
)

from bench.core.errors import ConfigError


def _shipped_studies() -> Path:
    """The shipped study files, ``presets.yaml`` and ``scenarios.yaml``: the checkout's top-level
    ``studies/`` folder, which a wheel holds as the package data ``bench/studyfiles`` (pyproject.toml
    maps it there). Installed from a wheel, that package data; run from a checkout (an editable
    install, or none), the folder itself."""
    installed = resources.files("bench") / "studyfiles"
    if installed.joinpath("presets.yaml").is_file():
        return Path(str(installed))
    return Path(str(resources.files("bench"))).resolve().parent / "studies"


STUDIES_DIR = _shipped_studies()
PRESETS_FILE = STUDIES_DIR / "presets.yaml"
SCENARIOS_FILE = STUDIES_DIR / "scenarios.yaml"  # the default scenarios (bench.data.scenarios)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # --set x=.inf is no value
    # Fields left out of dumps while they hold this value (their default): a stage key or study name
    # hashed from a config without the field stays valid.
    _omitted_at: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _omit_added_defaults(self, handler):
        data = handler(self)
        for name, value in self._omitted_at.items():
            if name in data and data[name] == value:
                del data[name]
        return data


def _steps_per_epoch(value: Any) -> int | str:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise ValueError("expected a positive integer or 'auto' (one walk over the training images)")


# How training patches pick their image (``data.sampler``; bench.data.sampler implements both).
SamplerMode = Literal["area", "per-image"]

# ``auto``: ceil(training images / batch), one visit per image (the official data loader's epoch).
StepsPerEpoch = Annotated[int | Literal["auto"], BeforeValidator(_steps_per_epoch)]


class DataConfig(_Strict):
    source: Literal["embedded", "paper"] = "embedded"
    root: str | None = None  # data root for real sets; default $TTAID_DATA_ROOT or ./datasets
    pretrain_noise: str = "synthetic-mix"
    train_noise: tuple[str, ...] = ("sidd-like", "polyu-like")
    test_noise: str = "nam-like"
    eval_crop: PositiveInt = 256  # center crop for validation and test (whole image if smaller)
    eval_repeats: PositiveInt = 1  # independent noise draws per clean eval image (embedded data)
    eval_seed: int = 20240101  # fixes the eval noise: identical for every row and seed
    val_fraction: float = Field(0.1, gt=0, lt=1)  # paper data: held-out share of SIDD/PolyU pairs
    sampler: SamplerMode = "area"  # "area": images by area; "per-image": each once per walk (official)
    # Embedded data: the seven grey photographs and textures in the pre-training and MTL images
    # (false: the colour images only; the quick-choices study compares both on validation).
    grey_images: bool = True
    _omitted_at: ClassVar[dict[str, Any]] = {"grey_images": True}


class PretrainConfig(_Strict):
    epochs: PositiveInt = 150
    steps_per_epoch: PositiveInt = 50
    batch: PositiveInt = 16
    patch: PositiveInt = 128
    lr: PositiveFloat = 1e-3
    inner_lr: PositiveFloat = 1e-3  # α of MAXL's look-ahead step
    lambda_g: float = Field(0.01, ge=0)


class FinetuneConfig(_Strict):
    epochs: PositiveInt = 150
    steps_per_epoch: StepsPerEpoch = "auto"  # paper data, per-image: ceil(234 / 2) = 117
    batch: PositiveInt = 2
    patch: PositiveInt = 128
    lr: PositiveFloat = 5e-5  # β
    inner_lr: PositiveFloat = 5e-5  # α
    steps: PositiveInt = 5  # K
    lambda_in: PositiveFloat = 10.0
    lambda_out: PositiveFloat = 10.0
    first_order: bool = False
    schedule: Literal["constant", "cosine"] = "constant"  # β over the run; the paper keeps it constant
    val_every: PositiveInt = 1
    mask_images: int = Field(2, ge=0)  # validation images whose mask is logged at every validation


class SupervisedConfig(_Strict):
    """The baselines' supervised training (RIDNet's recipe: L1, Adam 1e-4, batch 16, patch 128)."""

    epochs: PositiveInt = 150
    steps_per_epoch: StepsPerEpoch = "auto"  # paper data, per-image: ceil(234 / 16) = 15
    batch: PositiveInt = 16
    patch: PositiveInt = 128
    lr: PositiveFloat = 1e-4
    val_every: PositiveInt = 1


class MetaTestConfig(_Strict):
    steps: int = Field(5, ge=0)
    lr: PositiveFloat = 1e-5
    optimizer: Literal["sgd", "adam"] = "sgd"
    # alg3: Alg. 3 as printed (soft mask, the prediction after K updates); official: the official
    # TTAID test loop (mask > 0.5, the prediction from before the last update) — the ``official``
    # adaptation entry, with these steps, lr and optimizer.
    variant: Literal["alg3", "official"] = "alg3"
    _omitted_at: ClassVar[dict[str, Any]] = {"variant": "alg3"}


class TTAConfig(_Strict):
    """The TTA study under this preset (``bench.inference.scoring``): how the scenarios are cut into
    instances (None keeps the scenario file's value), which splits are scored, and per-adaptation
    budgets (``{entry: {steps: .., lr: ..}}``, through ``Adaptation.with_``; checked when a study loads)."""

    tile: PositiveInt | None = None
    tiles: Literal["all"] | PositiveInt | None = None
    draws: PositiveInt | None = None
    splits: tuple[Literal["val", "test"], ...] = Field(("test",), min_length=1)
    select_tiles: PositiveInt | None = None  # validation tiles per scenario a ``select:`` grid scores (None: all)
    select_max_steps: PositiveInt | None = None  # a ``select:`` grid's step counts capped here (None: as listed)
    budgets: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Preset(_Strict):
    description: str = ""
    data: DataConfig = DataConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    supervised: SupervisedConfig = SupervisedConfig()
    metatest: MetaTestConfig = MetaTestConfig()
    tta: TTAConfig = TTAConfig()

    def digest(self, tta: bool = True) -> str:
        """A hash of every value; ``tta=False`` leaves out the ``tta`` section, which only a TTA study
        reads (so adding or changing it does not rename the other studies)."""
        return stable_hash(self.model_dump(mode="json", exclude=None if tta else {"tta"}))

    def with_overrides(self, overrides: list[str], where: str = "--set") -> "Preset":
        """A copy with ``key=value`` overrides applied (a study row's ``set:``)."""
        if not overrides:
            return self
        try:
            return Preset.model_validate(apply_overrides(self.model_dump(mode="json"), list(overrides)))
        except ValidationError as e:
            raise ConfigError(one_line(e, where)) from None


def stable_hash(payload: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:n]


def one_line(err: ValidationError, where: str) -> str:
    """A pydantic error as the one-line ``where: field: message (got value)`` users see: list
    positions as ``noise[0]``, a validator's own message without pydantic's "Value error, " (it
    names the value itself)."""
    e = err.errors()[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
    msg = e["msg"].removeprefix("Value error, ")
    got = "" if e["type"] in ("missing", "value_error") else f" (got {e['input']!r})"
    return f"{where}: " + (f"{loc}: " if loc else "") + msg + got


def read_yaml(path: Path, what: str = "file") -> Any:
    """A YAML file's content; a missing file (``what`` names it: "scenario file") or malformed YAML is
    a one-line ConfigError naming the file (and the line)."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} malformed YAML ({getattr(e, 'problem', e)})") from None


def preset_names(path: Path | None = None) -> list[str]:
    return list((read_yaml(path or PRESETS_FILE) or {}).keys())


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` → (["a", "b"], value parsed as YAML: numbers, booleans, lists)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. finetune.epochs=3")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string; inside free mappings nothing coerces it
    return key.strip().split("."), value


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def apply_overrides(data: dict, overrides: list[str], model: type[BaseModel] = Preset) -> dict:
    data = json.loads(json.dumps(data))  # deep copy
    for item in overrides:
        path, value = parse_override(item)
        node, fields = data, model.model_fields
        for i, part in enumerate(path):
            if fields is None:  # inside a mapping field (tta.budgets.ENTRY.steps): free keys, checked later
                if i == len(path) - 1:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
                    if not isinstance(node, dict):
                        raise ConfigError(f"--set {item!r}: {'.'.join(path[:i + 1])!r} is a value, not a mapping")
                continue
            if part not in fields:
                known = ", ".join(fields)
                raise ConfigError(f"--set {item!r}: unknown key {'.'.join(path[:i + 1])!r}; expected one of: {known}")
            ann = fields[part].annotation
            if i == len(path) - 1:
                node[part] = value
            elif isinstance(ann, type) and issubclass(ann, BaseModel):
                node = node.setdefault(part, {})
                fields = ann.model_fields
            elif getattr(ann, "__origin__", None) is dict or str(ann).startswith("dict["):
                node = node.setdefault(part, {})
                fields = None
            else:
                raise ConfigError(f"--set {item!r}: {'.'.join(path[:i + 1])!r} has no sub-keys")
    return data


def load_preset(name: str, overrides: list[str] = (), path: Path | None = None) -> Preset:
    path = path or PRESETS_FILE
    presets = read_yaml(path) or {}
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(presets)} (in {path})")
    raw = presets[name] or {}
    try:
        Preset.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(one_line(e, f"{path} [{name}]")) from None
    try:
        return Preset.model_validate(apply_overrides(raw, list(overrides)))
    except ValidationError as e:
        raise ConfigError(one_line(e, "--set")) from None
