"""A study's name in Optuna and MLflow: ``<study>-<preset>-<8 hex digits of the preset>``.

Built and parsed here only, so every reader (report, denoise, tune) agrees with the writer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_DIGEST = re.compile(r"[0-9a-f]{8}")


@dataclass(frozen=True)
class StudyName:
    study: str  # the study file's stem, e.g. table2
    preset: str  # smoke | quick | paper | a user's preset name
    digest: str  # first 8 hex digits of the resolved preset's hash (so --set values get their own study)

    @classmethod
    def of(cls, study: str, preset: str, preset_digest: str) -> "StudyName":
        return cls(study, preset, preset_digest[:8])

    def format(self) -> str:
        return f"{self.study}-{self.preset}-{self.digest}"

    __str__ = format

    @classmethod
    def parse(cls, text: str) -> "StudyName | None":
        """``table2-quick-1a2b3c4d`` → StudyName; None for names of another shape."""
        parts = text.rsplit("-", 2)
        if len(parts) != 3 or not parts[0] or not parts[1] or not _DIGEST.fullmatch(parts[2]):
            return None
        return cls(*parts)
