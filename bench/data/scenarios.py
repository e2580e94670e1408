"""Scenarios: named, graded noise shifts on the embedded photographs, for the TTA study.

Test-time adaptation can only gain where the test noise differs from the training noise, and a
"no gain" only means something next to a control and a shift it should be able to address. A
scenario fixes what is adapted to: which photographs per evaluation split, which camera noise (a
profile of :mod:`bench.data.camera`, or one with fields changed), and how each photograph is cut
into paired instances (tiles × noise draws), enough of them for a paired test to see small gains.

The defaults live in ``studies/scenarios.yaml`` (the no-shift control
``in-distribution``, the unseen camera ``camera-shift``, the noise above the training range
``strong-shift``, and ``level-shift``, the noise level alone); a user YAML is merged over them by
:func:`load_scenarios`. Every instance is a pure function of ``eval_seed`` and its name
(``chelsea/t03/d1``: photograph, tile, draw), as the evaluation pairs of :mod:`bench.data` are, so
every row and seed is scored on the same noisy pixels. Scenarios with the same photographs, tiles
and draws share the random streams (common random numbers): they differ only by their camera.
"""
from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from bench.core.config import SCENARIOS_FILE, one_line, read_yaml
from bench.core.errors import ConfigError, DataError
from bench.data import camera, embedded
from bench.data.base import ImagePair

DEFAULT_FILE = SCENARIOS_FILE
EVAL_SPLITS: tuple[str, ...] = ("val", "test")
NOISE_FIELDS: tuple[str, ...] = (
    "shot_range", "ccm", "red_gain", "blue_gain", "digital_gain", "cfa", "demosaic", "chroma_nr",
    "jpeg_quality", "read_jitter", "read_slope", "read_intercept",
)
"""The camera-profile fields a scenario's noise entry may change (everything but name and description)."""
INSTANCE_VERSION = 1
"""Bump when the way instances are cut or seeded changes (part of :meth:`Scenario.fingerprint`)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoiseSpec(_Frozen):
    """One camera of a scenario: a profile by name, optionally with some of its fields changed.

    The changed profile goes through :class:`~bench.data.camera.CameraProfile`'s own checks, so an
    invalid value (a negative shot noise, a CFA that does not exist) is refused where it is defined.
    """

    base: str
    shot_range: tuple[float, float] | None = None
    ccm: tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]] | None = None
    red_gain: tuple[float, float] | None = None
    blue_gain: tuple[float, float] | None = None
    digital_gain: tuple[float, float] | None = None
    cfa: str | None = None
    demosaic: str | None = None
    chroma_nr: float | None = None
    jpeg_quality: int | None = None
    read_jitter: float | None = None
    read_slope: float | None = None
    read_intercept: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"base": data} if isinstance(data, str) else data

    def overrides(self) -> dict[str, Any]:
        """The fields this entry changes (``jpeg_quality: null`` means lossless output)."""
        out = {}
        for f in NOISE_FIELDS:
            if f in self.model_fields_set:
                value = getattr(self, f)
                if value is None and f != "jpeg_quality":
                    raise DataError(f"{f}: null is only allowed for jpeg_quality (lossless output)")
                out[f] = value
        return out

    def profile(self) -> camera.CameraProfile:
        """The camera profile this entry stands for; a DataError names the field that is wrong."""
        base = camera.get_profile(self.base)
        changes = self.overrides()
        if not changes:
            return base
        name = f"{self.base}+{'+'.join(sorted(changes))}"
        return dataclasses.replace(base, name=name, description=f"{base.description}; changed: "
                                   + ", ".join(f"{k}={v}" for k, v in sorted(changes.items())), **changes)

    def label(self) -> str:
        return self.profile().name


class Photos(_Frozen):
    """The embedded photographs a scenario evaluates on, per split (never another split's: no leak)."""

    val: tuple[str, ...] = Field(embedded.SPLITS["val"], min_length=1)
    test: tuple[str, ...] = Field(embedded.SPLITS["test"], min_length=1)

    @model_validator(mode="after")
    def _known(self) -> "Photos":
        for split in EVAL_SPLITS:
            for name in getattr(self, split):
                if name not in embedded.SPLITS[split]:
                    raise ValueError(f"{split}: {name!r} is not a {split} photograph; expected one of "
                                     f"{', '.join(embedded.SPLITS[split])} (another split's would leak it)")
        return self


class Scenario(_Frozen):
    """A noise shift and how its photographs become paired instances (tiles × draws)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = Field(min_length=1, pattern=r"^[^\n]*$")
    photos: Photos = Photos()
    noise: tuple[NoiseSpec, ...] = Field(min_length=1)
    """The cameras; draw ``d`` of every tile uses ``noise[d % len(noise)]``."""
    tile: PositiveInt | None = 128
    """Tile size in pixels; None = the whole photograph, one tile."""
    tiles: Literal["all"] | PositiveInt = "all"
    """``all`` full tiles of the regular grid, or at most k of them spread evenly over it."""
    draws: PositiveInt = 4
    """Independent noise draws per tile."""

    @field_validator("tiles", mode="before")
    @classmethod
    def _tiles(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "all":
            raise ValueError(f"{value!r}: expected 'all' or a positive number of tiles")
        return value

    @model_validator(mode="after")
    def _check(self) -> "Scenario":
        for i, spec in enumerate(self.noise):
            try:
                spec.profile()
            except DataError as e:
                raise ValueError(f"noise[{i}]: {e}") from None
        if self.tile is not None:
            for split in EVAL_SPLITS:
                for pair in _photos(split, getattr(self.photos, split)):
                    h, w = pair.clean.shape[:2]
                    if self.tile > min(h, w):
                        raise ValueError(f"tile: {self.tile} is larger than {pair.name} ({h}×{w}); "
                                         f"expected at most {min(h, w)} or null (the whole photograph)")
        return self

    def camera(self, draw: int) -> camera.CameraProfile:
        """The camera profile of draw ``draw`` (cameras alternate over the draws)."""
        return self.noise[draw % len(self.noise)].profile()

    def fingerprint(self) -> dict[str, Any]:
        """Everything that decides the scenario's pixels (its fields and the resolved camera profiles),
        as JSON-able data: hash it to key cached results or tag a run."""
        return {"scenario": self.model_dump(mode="json", exclude={"description"}),
                "profiles": [repr(s.profile()) for s in self.noise], "instances": INSTANCE_VERSION}

    def replace(self, **changes: Any) -> "Scenario":
        """A copy with some fields changed, validated again (e.g. fewer tiles and draws for a smoke run)."""
        return scenario_from_dict(self.name, {**self.model_dump(exclude_unset=True), **changes}, where="replace")


def _photos(split: str, names: tuple[str, ...]) -> list[ImagePair]:
    by_name = {p.name: p for p in embedded.clean_images(split)}
    return [by_name[n] for n in names]


def scenario_from_dict(name: str, data: Any, where: str = "scenario") -> Scenario:
    """Validate one scenario; bad input is a one-line ConfigError naming the scenario and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: scenario {name!r}: expected a mapping of fields, got {type(data).__name__}")
    if "name" in data and data["name"] != name:
        raise ConfigError(f"{where}: scenario {name!r}: name {data['name']!r} differs from its key")
    try:
        return Scenario.model_validate({**data, "name": name})
    except ValidationError as e:
        raise ConfigError(one_line(e, f"{where}: scenario {name!r}")) from None


def _read(path: Path) -> dict[str, Any]:
    data = read_yaml(path, "scenario file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of scenario name -> fields, got {type(data).__name__}")
    return data


def load_scenarios(path: Path | str | None = None) -> dict[str, Scenario]:
    """The default scenarios, with the user YAML at ``path`` merged over them.

    A new name adds a scenario; a known name replaces only the fields it gives
    (``camera-shift: {draws: 8}``). Every scenario is validated; errors name file, scenario and field.
    """
    raw = {name: dict(fields) for name, fields in _read(DEFAULT_FILE).items()}
    where = {name: str(DEFAULT_FILE) for name in raw}
    if path is not None:
        path = Path(path)
        for name, fields in _read(path).items():
            name = str(name)
            if not isinstance(fields, dict):
                raise ConfigError(f"{path}: scenario {name!r}: expected a mapping of fields, "
                                  f"got {type(fields).__name__}")
            raw[name] = {**raw.get(name, {}), **fields}
            where[name] = str(path)
    return {name: scenario_from_dict(name, fields, where[name]) for name, fields in raw.items()}


def scenario_names(path: Path | str | None = None) -> list[str]:
    return list(load_scenarios(path))


def get_scenario(name: str, path: Path | str | None = None) -> Scenario:
    """The scenario called ``name``; a ConfigError lists the known names otherwise."""
    known = load_scenarios(path)
    if name not in known:
        raise ConfigError(f"unknown scenario {name!r}; known: {', '.join(known)}")
    return known[name]


# --- instances -----------------------------------------------------------------------------------


def grid(height: int, width: int, tile: int | None) -> list[tuple[int, int, int, int]]:
    """(y, x, h, w) of every full tile of a regular non-overlapping grid, centred, in raster order."""
    if tile is None:
        return [(0, 0, height, width)]
    rows, cols = height // tile, width // tile
    y0, x0 = (height - rows * tile) // 2, (width - cols * tile) // 2
    return [(y0 + i * tile, x0 + j * tile, tile, tile) for i in range(rows) for j in range(cols)]


def chosen_tiles(scenario: Scenario, n_tiles: int) -> list[int]:
    """Indices into the grid of the tiles a scenario uses: all, or k spread evenly (first and last included)."""
    if scenario.tiles == "all" or scenario.tiles >= n_tiles:
        return list(range(n_tiles))
    return sorted({int(i) for i in np.round(np.linspace(0, n_tiles - 1, scenario.tiles))})


def _check_split(split: str) -> None:
    if split not in EVAL_SPLITS:
        raise ConfigError(f"split {split!r}: scenarios define {', '.join(EVAL_SPLITS)}")


def instance_count(scenario: Scenario, split: str) -> int:
    """How many paired instances :func:`instances` gives, without simulating any noise."""
    _check_split(split)
    total = 0
    for pair in _photos(split, getattr(scenario.photos, split)):
        total += len(chosen_tiles(scenario, len(grid(*pair.clean.shape[:2], scenario.tile))))
    return total * scenario.draws


def sized(scenario: Scenario, cfg: Any) -> Scenario:
    """The scenario cut as a preset's ``tta`` section says (its tile size, tiles and draws where set)."""
    changes = {k: getattr(cfg, k) for k in ("tile", "tiles", "draws") if getattr(cfg, k) is not None}
    return scenario.replace(**changes) if changes else scenario


def instances(scenario: Scenario, split: str, eval_seed: int) -> list[ImagePair]:
    """The scenario's paired instances on ``split``: clean tile and its noisy photograph, named
    ``photo/tNN/dD`` (NN the tile's index in the full grid, D the draw).

    The noise of each instance is drawn from ``default_rng([eval_seed, crc32(name)])`` with the
    camera of its draw, so an instance's pixels depend on nothing else (not on the other instances).
    """
    _check_split(split)
    out = []
    for pair in _photos(split, getattr(scenario.photos, split)):
        boxes = grid(*pair.clean.shape[:2], scenario.tile)
        for t in chosen_tiles(scenario, len(boxes)):
            y, x, h, w = boxes[t]
            clean = np.ascontiguousarray(pair.clean[y : y + h, x : x + w], dtype=np.float32)
            for d in range(scenario.draws):
                name = f"{pair.name}/t{t:02d}/d{d}"
                rng = np.random.default_rng([eval_seed, zlib.crc32(name.encode())])
                noisy = camera.simulate(clean, scenario.camera(d), rng).astype(np.float32)
                out.append(ImagePair(name, clean, noisy))
    return out


# --- strength ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Strength:
    """How strong a scenario's noise is: the noisy input against its clean tile, over the instances."""

    label: str
    cameras: tuple[str, ...]
    split: str
    n: int
    psnr_mean: float
    """Mean PSNR (dB) of noisy input vs clean; the higher, the milder the noise."""
    psnr_sd: float
    psnr_min: float
    psnr_max: float
    noise_std: float
    """Mean over instances of the RMS of noisy − clean, in grey levels (0–255)."""
    noise_std_min: float
    noise_std_max: float


def measure(pairs: list[ImagePair], label: str, cameras: tuple[str, ...], split: str) -> Strength:
    """A :class:`Strength` from paired instances."""
    from bench.core.metrics import psnr_float

    clean = np.stack([p.clean for p in pairs]).astype(np.float64)
    noisy = np.stack([p.noisy for p in pairs]).astype(np.float64)
    psnr = np.atleast_1d(psnr_float(noisy, clean))
    std = np.sqrt(((noisy - clean) ** 2).mean(axis=(1, 2, 3))) * 255.0
    return Strength(label, cameras, split, len(pairs), float(psnr.mean()), float(psnr.std(ddof=1)) if len(psnr) > 1
                    else 0.0, float(psnr.min()), float(psnr.max()), float(std.mean()), float(std.min()),
                    float(std.max()))


def shift_strength(scenario: Scenario, split: str, eval_seed: int) -> list[Strength]:
    """The scenario's noise strength, then each training camera's on the same clean tiles, draws and
    random streams (``camera.TRAIN_PROFILES``), so the shift can be stated as a difference."""
    rows = [measure(instances(scenario, split, eval_seed), scenario.name,
                    tuple(dict.fromkeys(s.label() for s in scenario.noise)), split)]
    for name in camera.TRAIN_PROFILES:
        ref = scenario.replace(noise=[{"base": name}])
        rows.append(measure(instances(ref, split, eval_seed), f"training camera {name}", (name,), split))
    return rows
