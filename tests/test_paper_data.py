"""The paper preset's data path: real-layout trees through the same CLI code as every study."""
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from bench.cli import main
from bench.data.base import ImagePair
from bench.data.paper import split_heldout

RNG = np.random.default_rng(5)
SIZE = (40, 52)


def _img(path: Path, fmt: str = "PNG") -> np.ndarray:
    arr = RNG.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return arr


def write_paper_tree(root: Path, n_sidd: int = 10, n_polyu: int = 10) -> None:
    for i in range(2):
        _img(root / "DIV2K" / "train" / f"{i + 1:04d}.png")
    _img(root / "DIV2K" / "valid" / "0801.png")
    scenes = [f"{i:04d}_001_S6_00100_00060_3200_L" for i in range(n_sidd)]
    base = root / "SIDD_Small_sRGB_Only"
    for s in scenes:
        _img(base / "Data" / s / "GT_SRGB_010.PNG")
        _img(base / "Data" / s / "NOISY_SRGB_010.PNG")
    (base / "Scene_Instances.txt").write_text("\n".join(scenes) + "\n")
    for i in range(n_polyu):
        _img(root / "PolyU" / "CroppedImages" / f"Cam_{i}_real.JPG", "JPEG")
        _img(root / "PolyU" / "CroppedImages" / f"Cam_{i}_mean.JPG", "JPEG")
    for name in ("a", "b"):
        (root / "Nam" / "cam").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / "Nam" / "cam" / f"{name}.mat",
                         {"img_noisy": RNG.integers(0, 256, (*SIZE, 3), dtype=np.uint8),
                          "img_mean": RNG.integers(0, 256, (*SIZE, 3), dtype=np.uint8)})


def test_heldout_split_is_disjoint_and_deterministic():
    pairs = [ImagePair(f"p{i:02d}", np.zeros((4, 4, 3), np.float32)) for i in range(20)]
    train, val = split_heldout(pairs, 0.1)
    assert len(val) == 2 and not {p.name for p in train} & {p.name for p in val}
    assert [p.name for p in split_heldout(pairs[::-1], 0.1)[1]] == [p.name for p in val]


@pytest.mark.slow
def test_paper_preset_runs_on_a_real_layout_tree(tmp_path, capsys):
    root = tmp_path / "data"
    write_paper_tree(root)
    study = tmp_path / "s.yaml"
    study.write_text("title: t\nrows:\n  - {name: Ours, method: ours}\n")
    main(["run", str(study), "--preset", "smoke", "--set", "data.source=paper", "--set", "data.eval_crop=32",
          "--data-root", str(root), "--home", str(tmp_path / "home"), "--quiet"])
    out = capsys.readouterr().out
    assert "│ Ours" in out and "Noisy input" in out
    with pytest.raises(SystemExit) as exc:  # a small tree: every set is there, but not the published counts
        main(["data", "check", "--preset", "paper", "--data-root", str(root)])
    out = capsys.readouterr().out
    assert exc.value.code == 1 and out.count("incomplete") == 5 and "missing" not in out


def test_missing_data_is_one_line_and_writes_no_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "table2", "--preset", "smoke", "--set", "data.source=paper",
              "--data-root", str(tmp_path / "nowhere"), "--home", str(tmp_path / "home")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "nowhere" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "home" / "mlflow.db").exists()


def test_data_check_reports_missing_sets_with_exit_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "check", "--preset", "paper", "--data-root", str(tmp_path)])
    assert exc.value.code == 1
    out = capsys.readouterr().out
    assert "missing" in out and "bench data fetch sidd-small" in out


def test_data_check_counts_against_the_published_numbers(tmp_path, capsys, monkeypatch):
    import dataclasses

    from bench.data import fetch

    write_paper_tree(tmp_path, n_sidd=3, n_polyu=2)
    published = {"div2k-train": 2, "div2k-valid": 1, "sidd-small": 3, "polyu": 2, "nam": 2}
    monkeypatch.setattr(fetch, "ARCHIVES", {n: dataclasses.replace(a, expected=published[n])
                                            for n, a in fetch.ARCHIVES.items()})
    main(["data", "check", "--preset", "paper", "--data-root", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.count("found") == 5 and "3/3" in out
    (tmp_path / "SIDD_Small_sRGB_Only" / "Scene_Instances.txt").write_text("0000_001_S6_00100_00060_3200_L\n")
    with pytest.raises(SystemExit) as exc:  # a half-extracted SIDD no longer passes
        main(["data", "check", "sidd-small", "--data-root", str(tmp_path)])
    assert exc.value.code == 1 and "incomplete" in capsys.readouterr().out


def test_data_preview_writes_a_png(tmp_path, capsys):
    out = tmp_path / "p.png"
    main(["data", "preview", "profiles", "--out", str(out), "--crop", "48"])
    assert out.exists() and Image.open(out).size[0] > 200
    with pytest.raises(SystemExit) as exc:
        main(["data", "preview", "nosuch"])
    assert exc.value.code == 2
