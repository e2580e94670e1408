"""Scenarios: named, graded noise shifts for the TTA study — simulated cameras on photographs (the
embedded ones, or a folder of the user's: ``photos: PATH``), or real noisy/clean pairs from a folder
(``kind: pairs``, :mod:`bench.data.pairs`).

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

Why one module of ~580 lines: the scenario schema, the user file merged over the defaults, cutting
instances and measuring a shift's strength all read the same scenario record.
"""
from __future__ import annotations

import dataclasses
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from bench.core import plugins
from bench.core.config import SCENARIOS_FILE, one_line, read_yaml
from bench.core.errors import ConfigError, DataError
from bench.data import camera, embedded, pairs
from bench.data.base import ImagePair
from bench.data.io import image_size

DEFAULT_FILE = SCENARIOS_FILE
PLUGIN_GROUP = plugins.GROUPS["scenarios"]
"""Entry points naming a :class:`Scenario`, or a mapping of its fields as in a scenario file."""
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
    _omitted_at: Any = {}
    """Fields added after scenarios were first keyed: left out of a dump at these values, so that
    fingerprints of scenarios that do not use them stay as they were."""

    @model_serializer(mode="wrap")
    def _omit_added_defaults(self, handler):
        data = handler(self)
        for name, value in type(self)._omitted_at.default.items():
            if name in data and data[name] == value:
                del data[name]
        return data


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
    """The photographs a simulated scenario evaluates on, per split (never another split's: no leak):
    embedded photographs by name, or a folder of clean photographs (``photos: PATH``, e.g. Kodak24),
    split into validation and test by the names given or by a seeded split by image."""

    folder: str | None = None
    val: tuple[str, ...] | None = None
    test: tuple[str, ...] | None = None
    val_fraction: float = Field(0.25, gt=0, lt=1)
    """A folder's share of validation photographs when neither val nor test is named."""
    seed: int = 0
    """The seed of that split."""
    _omitted_at = {"folder": None, "val_fraction": 0.25, "seed": 0}

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, data: Any) -> Any:
        if isinstance(data, (str, Path)):
            return {"folder": str(data)}
        if isinstance(data, dict) and data.get("folder") is None:
            return {"val": embedded.SPLITS["val"], "test": embedded.SPLITS["test"], **data}
        return data

    @model_validator(mode="after")
    def _known(self) -> Photos:
        if self.folder is not None:
            return self
        for split in EVAL_SPLITS:
            names = getattr(self, split)
            if not names:
                raise ValueError(f"{split}: expected at least one photograph")
            for name in names:
                if name not in embedded.SPLITS[split]:
                    raise ValueError(f"{split}: {name!r} is not a {split} photograph; expected one of "
                                     f"{', '.join(embedded.SPLITS[split])} (another split's would leak it)")
        return self


class Scenario(_Frozen):
    """A noise shift and how its photographs become paired instances (tiles × draws).

    ``kind: simulated`` (the default): clean photographs with a simulated camera's noise.
    ``kind: pairs``: a folder of real noisy/clean pairs (``folder``, ``match``: see
    :mod:`bench.data.pairs`), validation and test from disjoint images (``val``/``test`` by name, else
    a seeded split by image); one instance per tile, the noise is the photograph's own."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = Field(min_length=1, pattern=r"^[^\n]*$")
    kind: Literal["simulated", "pairs"] = "simulated"
    photos: Photos = Photos()
    noise: tuple[NoiseSpec, ...] = ()
    """The cameras; draw ``d`` of every tile uses ``noise[d % len(noise)]``."""
    folder: str | None = None
    """pairs: the folder of noisy/clean pairs (``{data_root}`` stands for the data root)."""
    match: Literal["auto", "sidd", "polyu", "subfolders"] = "auto"
    val: tuple[str, ...] | None = None
    test: tuple[str, ...] | None = None
    val_fraction: float = Field(0.25, gt=0, lt=1)
    split_seed: int = 0
    _omitted_at = {"kind": "simulated", "folder": None, "match": "auto", "val": None, "test": None,
                   "val_fraction": 0.25, "split_seed": 0}
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

    @model_validator(mode="before")
    @classmethod
    def _one_draw_of_real_noise(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "pairs" and "draws" not in data:
            return {**data, "draws": 1}
        return data

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        if self.kind == "pairs":
            if self.folder is None:
                raise ValueError("folder: a kind: pairs scenario needs the folder of its noisy/clean pairs")
            if self.noise:
                raise ValueError("noise: a kind: pairs scenario has real noise; leave noise out")
            if "photos" in self.model_fields_set:
                raise ValueError("photos: a kind: pairs scenario's images are its folder's pairs; leave photos out")
            if self.draws != 1:
                raise ValueError(f"draws: {self.draws}: a real pair has one noisy image; expected 1")
            return self
        for field in ("folder", "val", "test"):
            if getattr(self, field) is not None:
                raise ValueError(f"{field}: only a kind: pairs scenario has it; a simulated scenario's own "
                                 "photographs are photos: PATH")
        if not self.noise:
            raise ValueError("noise: a simulated scenario needs at least one camera profile")
        for i, spec in enumerate(self.noise):
            try:
                spec.profile()
            except DataError as e:
                raise ValueError(f"noise[{i}]: {e}") from None
        if self.tile is not None and self.photos.folder is None:
            for split in EVAL_SPLITS:
                for pair in _photos(split, getattr(self.photos, split)):
                    h, w = pair.clean.shape[:2]
                    if self.tile > min(h, w):
                        raise ValueError(f"tile: {self.tile} is larger than {pair.name} ({h}×{w}); "
                                         f"expected at most {min(h, w)} or null (the whole photograph)")
        return self

    def camera(self, draw: int) -> camera.CameraProfile:
        """The camera profile of draw ``draw`` (cameras alternate over the draws)."""
        if not self.noise:
            raise DataError(f"scenario {self.name!r}: real pairs have no simulated camera")
        return self.noise[draw % len(self.noise)].profile()

    def check_source(self) -> None:
        """Read the names and headers of a folder scenario's images (no pixels): the pairs match,
        twins agree in size, and validation and test are disjoint and not empty. One-line DataErrors."""
        for split in EVAL_SPLITS:
            source_items(self, split)

    def source_label(self) -> str:
        """What the noisy images are, for listings: the cameras, or the folder of real pairs."""
        if self.kind == "pairs":
            return f"real pairs: {self.folder} (match {self.match})"
        return ", ".join(dict.fromkeys(s.label() for s in self.noise))

    def fingerprint(self) -> dict[str, Any]:
        """Everything that decides the scenario's pixels (its fields and the resolved camera profiles),
        as JSON-able data: hash it to key cached results or tag a run."""
        return {"scenario": self.model_dump(mode="json", exclude={"description"}),
                "profiles": [repr(s.profile()) for s in self.noise], "instances": INSTANCE_VERSION}

    def rooted(self, root: str | os.PathLike[str] | None) -> Scenario:
        """A copy whose folders name the data root ``root`` resolves to where they say
        ``{data_root}`` (``pairs.fill_root``): a study's preset (``--data-root``) decides where its
        scenarios' real pairs are, not only the environment."""
        changes: dict[str, Any] = {}
        if self.folder is not None and pairs.DATA_ROOT_TOKEN in self.folder:
            changes["folder"] = pairs.fill_root(self.folder, root)
        if self.photos.folder is not None and pairs.DATA_ROOT_TOKEN in self.photos.folder:
            changes["photos"] = {**self.photos.model_dump(exclude_unset=True),
                                 "folder": pairs.fill_root(self.photos.folder, root)}
        return self.replace(**changes) if changes else self

    def replace(self, **changes: Any) -> Scenario:
        """A copy with some fields changed, validated again (e.g. fewer tiles and draws for a smoke run)."""
        return scenario_from_dict(self.name, {**self.model_dump(exclude_unset=True), **changes}, where="replace")


def _photos(split: str, names: tuple[str, ...]) -> list[ImagePair]:
    by_name = {p.name: p for p in embedded.clean_images(split)}
    return [by_name[n] for n in names]


@dataclass(frozen=True)
class SourceItem:
    """One image of a scenario's split: an embedded photograph, a clean file, or a noisy/clean pair."""

    name: str
    size: tuple[int, int]
    clean: Path | None = None
    noisy: Path | None = None
    embedded: ImagePair | None = None

    def clean_pixels(self) -> np.ndarray:
        return self.embedded.clean if self.embedded is not None else pairs.decode(self.clean)


def source_items(scenario: Scenario, split: str) -> list[SourceItem]:
    """The images of ``split``, from headers only (see :meth:`Scenario.check_source`)."""
    _check_split(split)
    if scenario.kind == "pairs":
        folder = pairs.resolve(scenario.folder)
        rule, found = pairs.find_pairs(folder, scenario.match)
        by_name = {p.name: p for p in found}
        chosen = pairs.split(list(by_name), scenario.val, scenario.test, scenario.val_fraction, scenario.split_seed,
                             folder)[EVAL_SPLITS.index(split)]
        return [SourceItem(n, pairs.pair_size(by_name[n], rule), by_name[n].clean, by_name[n].noisy) for n in chosen]
    ph = scenario.photos
    if ph.folder is not None:
        folder = pairs.resolve(ph.folder)
        files = dict(pairs.find_photos(folder))
        chosen = pairs.split(list(files), ph.val, ph.test, ph.val_fraction, ph.seed, folder)[EVAL_SPLITS.index(split)]
        return [SourceItem(n, tuple(image_size(files[n])[:2]), files[n]) for n in chosen]
    return [SourceItem(p.name, p.clean.shape[:2], embedded=p) for p in _photos(split, getattr(ph, split))]


def _boxes(scenario: Scenario, item: SourceItem) -> list[tuple[int, int, int, int]]:
    boxes = grid(*item.size, scenario.tile)
    if not boxes:
        h, w = item.size
        raise DataError(f"{item.noisy or item.clean or item.name}: {h}x{w}, smaller than the scenario's tile "
                        f"{scenario.tile}; expected images of at least {scenario.tile} pixels a side, or a "
                        "smaller tile (tile: null scores whole images)")
    return boxes


def _anchor(fields: dict[str, Any], base: Path) -> dict[str, Any]:
    """A user file's relative folders, taken from the file's own folder."""
    out = dict(fields)

    def fix(path: Any) -> Any:
        if isinstance(path, str) and not path.startswith(("{", "~", "/")) and not Path(path).is_absolute():
            return str(base / path)
        return path

    if "folder" in out:
        out["folder"] = fix(out["folder"])
    if isinstance(out.get("photos"), str):
        out["photos"] = fix(out["photos"])
    elif isinstance(out.get("photos"), dict) and "folder" in out["photos"]:
        out["photos"] = {**out["photos"], "folder": fix(out["photos"]["folder"])}
    return out


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


def load_scenarios(path: Path | str | None = None, with_plugins: bool = False) -> dict[str, Scenario]:
    """The default scenarios, with the user YAML at ``path`` merged over them.

    A new name adds a scenario; a known name replaces only the fields it gives
    (``camera-shift: {draws: 8}``). Every scenario is validated; errors name file, scenario and field.
    ``with_plugins`` adds the scenarios of installed plugins (entry-point group ``ttaid_bench.scenarios``)
    whose names neither file uses; a study that names one loads only that one (:func:`get_scenario`).
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
            raw[name] = {**raw.get(name, {}), **_anchor(fields, path.parent)}
            where[name] = str(path)
    known = {name: scenario_from_dict(name, fields, where[name]) for name, fields in raw.items()}
    if with_plugins:
        for name in plugins.names(PLUGIN_GROUP):
            if name not in known:
                known[name] = plugin_scenario(name)
    return known


PLUGIN_SCENARIOS: dict[str, Scenario] = {}
"""The plugin scenarios loaded so far, by name."""


def check_plugin(plugin: plugins.Plugin) -> Scenario:
    """A plugin's object as a scenario named like its entry point; one-line ConfigErrors naming the plugin."""
    obj = plugin.obj
    if isinstance(obj, Scenario):
        if obj.name != plugin.name:
            raise ConfigError(f"{plugin.where()}: the entry point is named {plugin.name!r} but its Scenario is "
                              f"named {obj.name!r}; use one name")
        return obj
    if isinstance(obj, dict):
        return scenario_from_dict(plugin.name, obj, plugin.where())
    raise ConfigError(f"{plugin.where()}: expected a Scenario (bench.data.scenarios.Scenario) or a mapping of "
                      f"its fields, got {type(obj).__name__}")


def plugin_scenario(name: str) -> Scenario:
    """The plugin scenario ``name`` (a built-in scenario's name is refused)."""
    if name not in PLUGIN_SCENARIOS:
        reserved = [str(n) for n in _read(DEFAULT_FILE)]
        PLUGIN_SCENARIOS[name] = check_plugin(plugins.load_one(PLUGIN_GROUP, name, reserved=reserved))
    return PLUGIN_SCENARIOS[name]


def scenario_names(path: Path | str | None = None) -> list[str]:
    """The files' scenario names, then the installed plugins' (without importing them)."""
    known = list(load_scenarios(path))
    return known + [n for n in plugins.names(PLUGIN_GROUP) if n not in known]


def get_scenario(name: str, path: Path | str | None = None, root: str | os.PathLike[str] | None = None) -> Scenario:
    """The scenario called ``name`` (the files', else an installed plugin's), ``{data_root}`` in its
    folders resolved with ``root`` (``Scenario.rooted``), its folder (if any) checked by names and
    headers; a ConfigError lists the known names otherwise, a DataError names the file and the rule
    it broke."""
    known = load_scenarios(path)
    if name in known:
        scenario = known[name]
    elif name in plugins.names(PLUGIN_GROUP):
        scenario = plugin_scenario(name)
    else:
        raise ConfigError(f"unknown scenario {name!r}; known: {', '.join([*known, *plugins.names(PLUGIN_GROUP)])}")
    scenario = scenario.rooted(root)
    try:
        scenario.check_source()
    except DataError as e:
        raise DataError(f"scenario {name!r}: {e}") from None
    return scenario


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
    total = 0
    for item in source_items(scenario, split):
        total += len(chosen_tiles(scenario, len(_boxes(scenario, item))))
    return total * scenario.draws


def sized(scenario: Scenario, cfg: Any) -> Scenario:
    """The scenario cut as a preset's ``tta`` section says (its tile size, tiles and draws where set)."""
    fields = ("tile", "tiles") if scenario.kind == "pairs" else ("tile", "tiles", "draws")  # one draw of real noise
    changes = {k: getattr(cfg, k) for k in fields if getattr(cfg, k) is not None}
    return scenario.replace(**changes) if changes else scenario


def instances(scenario: Scenario, split: str, eval_seed: int) -> list[ImagePair]:
    """The scenario's paired instances on ``split``: clean tile and its noisy photograph, named
    ``photo/tNN/dD`` (NN the tile's index in the full grid, D the draw); for real pairs ``photo/tNN``
    (the noisy tile is the same window of the pair's noisy image).

    The noise of each simulated instance is drawn from ``default_rng([eval_seed, crc32(name)])`` with
    the camera of its draw, so an instance's pixels depend on nothing else (not on the other instances).
    """
    out = []
    for item in source_items(scenario, split):
        boxes = _boxes(scenario, item)
        if scenario.kind == "pairs":
            clean_img, noisy_img = pairs.decode(item.clean), pairs.decode(item.noisy)
            for t in chosen_tiles(scenario, len(boxes)):
                y, x, h, w = boxes[t]
                out.append(ImagePair(f"{item.name}/t{t:02d}",
                                     np.ascontiguousarray(clean_img[y : y + h, x : x + w], dtype=np.float32),
                                     np.ascontiguousarray(noisy_img[y : y + h, x : x + w], dtype=np.float32)))
            continue
        photo = item.clean_pixels()
        for t in chosen_tiles(scenario, len(boxes)):
            y, x, h, w = boxes[t]
            clean = np.ascontiguousarray(photo[y : y + h, x : x + w], dtype=np.float32)
            for d in range(scenario.draws):
                name = f"{item.name}/t{t:02d}/d{d}"
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
    noise_lag1_corr: float = float("nan")
    """Mean over instances of the noise's (noisy − clean) lag-1 spatial autocorrelation, horizontal and
    vertical neighbours averaged, channels averaged (``noise_lag1``): ~0 for white noise, ~0.5 for
    noise box-filtered over 2×2 pixels; demosaicked camera noise is well above 0, which is what hurts
    losses that predict a pixel from its neighbours."""


def noise_lag1(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """Per instance, the lag-1 spatial autocorrelation of the noise n = noisy − clean of (N, H, W, C)
    stacks: per channel, n centred on its mean, ρ = mean(n[y, x]·n[y, x+1]) / var(n) horizontally and
    likewise vertically, the two averaged, then the channels averaged (a channel without noise is
    left out; NaN when none has any)."""
    n = np.asarray(noisy, dtype=np.float64) - np.asarray(clean, dtype=np.float64)
    n = n - n.mean(axis=(1, 2), keepdims=True)
    var = (n**2).mean(axis=(1, 2))
    horizontal = (n[:, :, 1:] * n[:, :, :-1]).mean(axis=(1, 2))
    vertical = (n[:, 1:] * n[:, :-1]).mean(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(var > 0, (horizontal + vertical) / (2 * var), np.nan)  # (N, C)
    out = np.full(len(n), np.nan)
    some = ~np.isnan(rho).all(axis=1)
    out[some] = np.nanmean(rho[some], axis=1)
    return out


def measure(pairs: list[ImagePair], label: str, cameras: tuple[str, ...], split: str) -> Strength:
    """A :class:`Strength` from paired instances."""
    from bench.core.metrics import psnr_float

    clean = np.stack([p.clean for p in pairs]).astype(np.float64)
    noisy = np.stack([p.noisy for p in pairs]).astype(np.float64)
    psnr = np.atleast_1d(psnr_float(noisy, clean))
    std = np.sqrt(((noisy - clean) ** 2).mean(axis=(1, 2, 3))) * 255.0
    lag1 = noise_lag1(clean, noisy)
    return Strength(label, cameras, split, len(pairs), float(psnr.mean()), float(psnr.std(ddof=1)) if len(psnr) > 1
                    else 0.0, float(psnr.min()), float(psnr.max()), float(std.mean()), float(std.min()),
                    float(std.max()), float(np.nanmean(lag1)) if not np.isnan(lag1).all() else float("nan"))


def shift_strength(scenario: Scenario, split: str, eval_seed: int) -> list[Strength]:
    """The scenario's noise strength, then each training camera's on the same clean tiles, draws and
    random streams (``camera.TRAIN_PROFILES``), so the shift can be stated as a difference."""
    own = instances(scenario, split, eval_seed)
    if scenario.kind == "pairs":  # the training cameras on the pairs' clean tiles
        rows = [measure(own, scenario.name, ("real",), split)]
        for name in camera.TRAIN_PROFILES:
            profile = camera.get_profile(name)
            ref = [ImagePair(p.name, p.clean, camera.simulate(
                p.clean, profile, np.random.default_rng([eval_seed, zlib.crc32(p.name.encode())])).astype(np.float32))
                for p in own]
            rows.append(measure(ref, f"training camera {name}", (name,), split))
        return rows
    rows = [measure(own, scenario.name, tuple(dict.fromkeys(s.label() for s in scenario.noise)), split)]
    for name in camera.TRAIN_PROFILES:
        ref = scenario.replace(noise=[{"base": name}])
        rows.append(measure(instances(ref, split, eval_seed), f"training camera {name}", (name,), split))
    return rows
