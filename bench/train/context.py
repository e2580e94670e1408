"""What a trainer needs from its caller: a device, a seeded RNG, a metric sink and progress."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@dataclass
class TrainContext:
    device: torch.device
    rng: np.random.Generator
    log: Callable[[dict[str, float], int], None] = lambda metrics, step: None
    image: Callable[[np.ndarray, str], None] = lambda array, name: None  # e.g. masks for Figs. 5/6
    on_validate: Callable[[int, dict[str, float]], None] = lambda epoch, metrics: None  # e.g. Optuna pruning
    quiet: bool = False
    history: list[dict] = field(default_factory=list)

    def record(self, metrics: dict[str, float], step: int) -> None:
        """Keep an epoch's metrics (returned with the checkpoint) and send them to the sink."""
        self.history.append({"step": step, **metrics})
        self.log(metrics, step)

    @contextmanager
    def progress(self, total: int, desc: str) -> Iterator[Callable[..., None]]:
        """A progress bar; yields ``advance(**fields)``. Silent with ``quiet``."""
        if self.quiet:
            yield lambda **_: None
            return
        cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
        with Progress(*cols, transient=True) as bar:
            task = bar.add_task(desc, total=total, info="")

            def advance(**info: float) -> None:
                text = " ".join(f"{k} {v:.4g}" for k, v in info.items())
                bar.update(task, advance=1, **({"info": text} if info else {}))

            yield advance


def seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
