"""Options shared by several commands, defined once, and the decorators that add them to a command.

``study_options`` gives a command the eleven options of running a study (``bench run``, ``bench
ablate``) and hands them to its body as one ``StudyOptions``; ``ablation_flags`` gives it one flag
per entry of ``bench.studies.ablate.ABLATIONS``. Typer reads a command's options from its signature, so
the decorators extend that signature.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from bench.core.config import PRESETS_FILE, preset_names
from bench.core.device import CHOICES as DEVICE_CHOICES
from bench.core.errors import BenchError
from bench.core.home import Home
from bench.runtime.urls import DRIVERS, check_storage
from bench.studies.ablate import ABLATIONS

HOME = typer.Option(None, "--home", help="Where studies, caches and the local MLflow store live "
                                         "(default: $BENCH_HOME or ./.bench).")


def preset_choices() -> str:
    """The preset names, as presets.yaml lists them (help text: never a hand-written list)."""
    try:
        return " | ".join(preset_names())
    except BenchError:  # a malformed presets.yaml: the command that loads a preset says what is wrong
        return f"a preset of {PRESETS_FILE}"


def preset_option(default: str | None = "quick", what: str = "Preset") -> Any:
    """A ``--preset`` option whose help lists the presets of presets.yaml."""
    return typer.Option(default, "--preset", help=f"{what}: {preset_choices()} (studies/presets.yaml; "
                                                  f"`bench presets` describes them).")


PRESET = preset_option()
SET = typer.Option([], "--set", help="Override a preset value, e.g. finetune.epochs=3.")
DEVICE = typer.Option("auto", "--device", help=f"One of: {DEVICE_CHOICES}.")
STORAGE = typer.Option(None, "--storage", help=f"Optuna storage URL: {', '.join(f'{d}://…' for d in DRIVERS)} "
                                               "(default: a journal file in --home).")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
MAX_SEED = 2**32 - 1  # NumPy's generators take seeds up to this


def home_dir(home: Optional[Path]) -> Home:
    """The bench home of ``--home`` (else $BENCH_HOME, else ./.bench)."""
    return Home.resolve(home)


@dataclass(frozen=True)
class StudyOptions:
    """How to run a study: the values of the options ``study_options`` adds."""

    preset: str = "quick"
    set_: tuple[str, ...] = ()
    seeds: str = "0"
    device: str = "auto"
    storage: Optional[str] = None
    data_root: Optional[Path] = None
    home: Optional[Path] = None
    workers: int = 1
    quiet: bool = False
    rows: Optional[str] = None

    def row_list(self) -> list[str] | None:
        """``--rows``' names (None: every row); checked against the study by ``StudySpec.chosen_rows``."""
        if self.rows is None:
            return None
        names = [n.strip() for n in self.rows.split(",") if n.strip()]
        if not names:
            raise BenchError(f"--rows {self.rows!r}: expected comma-separated row names, e.g. none,alg3")
        return names

    def overrides(self) -> list[str]:
        """``--set`` values, and ``--data-root`` as the ``data.root`` override it is."""
        return [*self.set_, *([f"data.root={self.data_root}"] if self.data_root else [])]

    def seed_list(self) -> list[int]:
        try:
            seeds = [int(s) for s in self.seeds.split(",") if s.strip()]
        except ValueError:
            raise BenchError(f"--seeds {self.seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
        if not seeds or any(s < 0 or s > MAX_SEED for s in seeds):
            raise BenchError(f"--seeds {self.seeds!r}: expected one or more integers from 0 to {MAX_SEED} "
                             f"(NumPy's seed range)")
        if len(set(seeds)) != len(seeds):
            twice = sorted({s for s in seeds if seeds.count(s) > 1})
            raise BenchError(f"--seeds {self.seeds!r}: seed {twice[0]} is given twice; expected distinct seeds "
                             f"(a repeated seed trains the same numbers again and overstates n)")
        return seeds

    def home_dir(self) -> Home:
        return home_dir(self.home)

    def check(self):
        """Every check that needs no heavy library, before any loads: the preset with its ``--set``
        overrides, ``--workers``, ``--seeds``, the ``--storage`` scheme, then ``--device`` (a CUDA
        device needs torch to be checked). Returns (the preset, the seeds)."""
        from bench.core.config import load_preset
        from bench.core.device import check_device

        cfg = load_preset(self.preset, self.overrides())
        if self.workers < 1:
            raise BenchError(f"--workers {self.workers}: expected a positive integer")
        seeds = self.seed_list()
        check_storage(self.storage)
        check_device(self.device)
        return cfg, seeds


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


STUDY_OPTIONS = [
    _option("preset", str, PRESET),
    _option("set_", list[str], SET),
    _option("seeds", str, typer.Option("0", "--seeds", help="Comma-separated seeds; each row runs once per seed.")),
    _option("device", str, DEVICE),
    _option("storage", Optional[str], STORAGE),
    _option("data_root", Optional[Path], typer.Option(None, "--data-root", help="Root of the real data sets: the paper "
                                                      "preset's and {data_root} in scenario folders (default "
                                                      "$TTAID_DATA_ROOT or ./datasets).")),
    _option("home", Optional[Path], HOME),
    _option("workers", int, typer.Option(1, "--workers", help="Trials run at once, each in its own process.")),
    _option("quiet", bool, QUIET),
    _option("rows", Optional[str], typer.Option(None, "--rows", help="Comma-separated rows to run (default: every "
                                                "row); a TTA study adds their `none` reference. The table shows "
                                                "every finished row.")),
]

ABLATION_FLAGS = [_option(a.flag.replace("-", "_"), bool,
                          typer.Option(False, f"--{a.flag}", help=a.label[0].upper() + a.label[1:] + "."))
                  for a in ABLATIONS.values()]


def _extend(extra: list[inspect.Parameter], target: str, pack: Callable[..., Any]) -> Callable:
    """A decorator: the command gets ``extra`` as options, and its body ``pack(**their values)`` as ``target``."""
    def decorate(fn: Callable) -> Callable:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != target]
        names = [p.name for p in extra]

        def command(**kw: Any) -> Any:
            kw[target] = pack(**{n: kw.pop(n) for n in names})
            return fn(**kw)

        params = own + extra
        command.__name__, command.__qualname__, command.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        command.__module__ = fn.__module__
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command
    return decorate


study_options = _extend(STUDY_OPTIONS, "opts", lambda set_, **kw: StudyOptions(set_=tuple(set_), **kw))
ablation_flags = _extend(ABLATION_FLAGS, "flags",
                         lambda **on: [a.flag for a in ABLATIONS.values() if on[a.flag.replace("-", "_")]])
