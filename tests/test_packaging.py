"""The wheel: it holds every module and the top-level studies/ folder, where an installed bench looks.

pyproject.toml lists the packages by hand (the studies/ folder is installed as the package folder
bench/studyfiles, which setuptools' package discovery cannot add), so a package missing from that
list would be missing from the wheel only: this test builds one (no dependencies, no build
isolation: a couple of seconds) from a copy of the sources, so the checkout gets no build/ folder.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "bench", "methods", "studies")


def _wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True, text=True)
    (wheel,) = out.glob("*.whl")
    return wheel


def test_the_wheel_holds_every_module_and_the_studies_where_bench_looks(tmp_path):
    wheel = _wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for pkg in ("bench", "methods") for p in (ROOT / pkg).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert not modules - names, "packages missing from pyproject.toml's [tool.setuptools] packages"
    studies = {f"bench/studyfiles/{p.name}" for p in (ROOT / "studies").glob("*.yaml")}
    assert {"bench/studyfiles/table2.yaml", "bench/studyfiles/presets.yaml",
            "bench/studyfiles/scenarios.yaml"} <= studies <= names
    assert not any(n.startswith("studies/") for n in names)  # no top-level package named studies

    # Installed (unpacked on sys.path, away from the checkout): the code finds them in the package.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "import bench; from bench.core.config import PRESETS_FILE, STUDIES_DIR, load_preset\n"
            "from bench.data.scenarios import DEFAULT_FILE, load_scenarios\n"
            "from bench.studies.spec import study_names\n"
            "assert bench.__file__.startswith(sys.argv[1]), bench.__file__\n"
            "print(STUDIES_DIR); print(PRESETS_FILE); print(DEFAULT_FILE)\n"
            "load_preset('smoke'); assert load_scenarios() and 'table2' in study_names()")
    out = subprocess.run([sys.executable, "-c", code, str(site)], cwd=tmp_path, check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == [str(site / "bench" / "studyfiles"), str(site / "bench" / "studyfiles" / "presets.yaml"),
                   str(site / "bench" / "studyfiles" / "scenarios.yaml")]
