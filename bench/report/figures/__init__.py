"""The paper's figures, rebuilt from a finished study (PNG + PDF, one style).

One module per figure, each with ``compute(study, data, models) -> Data`` (chooses the images,
runs the networks, reads the logged artifacts) and ``draw(data, folder) -> files`` (matplotlib
only), so a test can check what a figure shows without drawing it. Figures that run a network
(``needs_model``) get the rows' trained models (``common.Models``, through
``bench.inference.trained.load_model``); the others get ``None`` there. A panel or figure whose inputs do not
exist (no RIDNet row, no checkpoint on this machine, …) is skipped with a note.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from bench.core.errors import BenchError
from bench.report.figures import crops, curves, features, masks, metatest_gain, steps, tta_alignment, tta_steps
from bench.report.figures.common import FigureOut, Models, Skip, StudyData, crop_where, pick_ours, style
from bench.report.runs import StudyRuns
from bench.report.tta import scenarios_of


@dataclass(frozen=True)
class Figure:
    module: ModuleType  # NAME, TITLE, compute, draw
    needs_model: bool  # runs a trained network (gets ``Models``)
    studies: str = "plain"  # plain | tta (a study with scenarios) | any: which studies it is drawn for

    @property
    def name(self) -> str:
        return self.module.NAME


FIGURES: tuple[Figure, ...] = (
    Figure(curves, needs_model=False, studies="any"),  # training curves of every row
    Figure(metatest_gain, needs_model=False),  # per-image PSNR with vs without meta-test
    Figure(masks, needs_model=False),  # Figs. 5/6, from the mask PNGs the MTL trainer logged
    Figure(crops, needs_model=True),  # Fig. 3
    Figure(steps, needs_model=True),  # Fig. 7
    Figure(features, needs_model=True),  # Fig. 8
    Figure(tta_steps, needs_model=False, studies="tta"),  # the TTA study's gain per step
    Figure(tta_alignment, needs_model=False, studies="tta"),  # the TTA study's gain against alignment
)


def make_figures(study: StudyRuns, folder: Path, device: str = "cpu") -> tuple[list[FigureOut], list[str]]:
    """Every figure this study supports; returns them and one note per skipped figure."""
    data, models = StudyData(study, device), Models(study, device)
    made, skipped = [], []
    kind = "tta" if scenarios_of(study) else "plain"
    for fig in FIGURES:
        if fig.studies not in ("any", kind):
            continue
        try:
            computed = fig.module.compute(study, data, models if fig.needs_model else None)
            with style():
                files = fig.module.draw(computed, folder)
            made.append(FigureOut(fig.name, fig.module.TITLE, computed.caption, files, computed.notes))
        except (Skip, BenchError) as e:
            skipped.append(f"{fig.name}: skipped — {e}")
    return made, skipped


__all__ = ["FIGURES", "Figure", "FigureOut", "Skip", "crop_where", "make_figures", "pick_ours"]
