"""`bench data fetch` against a local HTTP server (127.0.0.1 only) serving tiny archives built like
the real ones: layouts, resuming, checksums, and failures that leave nothing a later check accepts."""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import fetch as F
from bench.data import real


def _img(fmt: str = "PNG", seed: int = 0, size: int = 8) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


SCENES = ("0001_001_S6_00100_00060_3200_L", "0002_001_S6_00100_00020_3200_N")


def build(name: str, pairs: int = 2) -> bytes:
    """A tiny archive with the real one's folder structure and file names."""
    if name.startswith("div2k"):
        split, first = ("train", 1) if name == "div2k-train" else ("valid", 801)
        return _zip({f"DIV2K_{split}_HR/{first + i:04d}.png": _img(seed=i) for i in range(pairs)})
    if name == "sidd-small":
        files = {"SIDD_Small_sRGB_Only/Scene_Instances.txt": "\n".join(SCENES[:pairs]).encode() + b"\n",
                 "SIDD_Small_sRGB_Only/ReadMe_sRGB.txt": b"readme"}
        for i, scene in enumerate(SCENES[:pairs]):
            files[f"SIDD_Small_sRGB_Only/Data/{scene}/GT_SRGB_010.PNG"] = _img(seed=i)
            files[f"SIDD_Small_sRGB_Only/Data/{scene}/NOISY_SRGB_010.PNG"] = _img(seed=10 + i)
        return _zip(files)
    if name == "polyu":
        top = "PolyU-Real-World-Noisy-Images-Dataset-master"
        files = {f"{top}/README.md": b"polyu"}
        for i in range(pairs):
            files[f"{top}/CroppedImages/Canon5D2_5_160_3200_chair_{i}_mean.JPG"] = _img("JPEG", i)
            files[f"{top}/CroppedImages/Canon5D2_5_160_3200_chair_{i}_real.JPG"] = _img("JPEG", 10 + i)
        return _zip(files)
    if name == "nam":
        top = "MCWNNM-ICCV2017-master/Real_ccnoise_denoised_part"
        files = {"MCWNNM-ICCV2017-master/README.md": b"mcwnnm"}
        for i in range(pairs):
            for kind, seed in (("mean", i), ("real", 10 + i), ("ours", 20 + i)):
                files[f"{top}/d600_iso3200_{i + 1}_{kind}.png"] = _img(seed=seed)
        return _zip(files)
    raise KeyError(name)


class Server:
    """Files by name over HTTP/1.0 with Range support; ``truncate[name] = k`` cuts the next k responses
    of that file in half (Content-Length still says the whole)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.ranges: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                data = outer.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                rng = self.headers.get("Range")
                if rng:
                    outer.ranges.append(rng)
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if outer.truncate.get(name, 0) > 0:
                    outer.truncate[name] -= 1
                    body = body[: len(body) // 2]
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def serve(self, archive: F.Archive, data: bytes) -> None:
        self.files[archive.filename] = data


@pytest.fixture
def server():
    s = Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def tiny(monkeypatch, server):
    """Every set expects 2 pairs, publishes no checksum, and is served by ``server``."""
    table = {n: dataclasses.replace(a, expected=2, sha256=None, size=None) for n, a in F.ARCHIVES.items()}
    monkeypatch.setattr(F, "ARCHIVES", table)
    monkeypatch.setattr(F, "RETRIES", 1)
    for name, archive in table.items():
        server.serve(archive, build(name))
    return table


def fetch(run_cli, root, server, *names, extra=()):
    return run_cli("data", "fetch", *names, "--data-root", root, "--mirror", server.url, *extra)


def one_line(code, err):
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


def nothing_accepted(run_cli, root, name):
    """No staging folder, and `bench data check` does not accept the set."""
    assert not list((root / F.FETCH_DIR).glob("tmp-*")) if (root / F.FETCH_DIR).exists() else True
    code, out, _ = run_cli("data", "check", name, "--data-root", root)
    status = out.split(f"│ {name}", 1)[1].split("│")[1].strip()
    assert code == 1 and status in ("missing", "broken", "incomplete"), out


def test_all_sets_land_in_the_loaders_layout_and_verify(tmp_path, run_cli, server, tiny):
    root = tmp_path / "data"
    code, out, err = fetch(run_cli, root, server, "all")
    assert code == 0, err
    assert len(real.load_div2k(root, "train")) == 2 and len(real.load_div2k(root, "valid")) == 2
    assert len(real.load_sidd_small(root)) == 2 and len(real.load_polyu(root)) == 2
    nam = real.load_nam(root)
    assert [p.name for p in nam] == ["CC15/d600_iso3200_1", "CC15/d600_iso3200_2"]  # MCWNNM's *_ours.png left out
    assert not list((root / "Nam" / "CC15").glob("*_ours.png"))
    lock = json.loads((root / ".fetch" / "lock.json").read_text())
    for name in F.ARCHIVES:
        assert lock[name]["sha256"] == hashlib.sha256(server.files[F.ARCHIVES[name].filename]).hexdigest()
        assert "trust on first use" in lock[name]["how"]
    assert not list((root / ".fetch").glob("tmp-*")) and not list((root / ".fetch" / "downloads").iterdir())
    code, out, err = run_cli("data", "check", *F.ARCHIVES, "--data-root", root, "--verify")
    assert code == 0 and out.count("verified") == 5, out
    code, out, _ = fetch(run_cli, root, server, "polyu")  # there already: nothing to do
    assert code == 0 and "already" in out


def test_a_set_with_a_published_checksum_and_size_is_checked_against_them(tmp_path, run_cli, server, tiny,
                                                                          monkeypatch):
    data = server.files[tiny["div2k-valid"].filename]
    good = dataclasses.replace(tiny["div2k-valid"], sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    monkeypatch.setitem(F.ARCHIVES, "div2k-valid", good)
    code, out, err = fetch(run_cli, tmp_path, server, "div2k-valid")
    assert code == 0 and "published" in out, err
    assert "div2k-valid" not in json.loads((tmp_path / ".fetch" / "lock.json").read_text()) \
        if (tmp_path / ".fetch" / "lock.json").exists() else True


def test_a_truncated_download_resumes_with_a_range_request(tmp_path, run_cli, server, tiny):
    server.truncate[tiny["sidd-small"].filename] = 1
    code, _, err = fetch(run_cli, tmp_path, server, "sidd-small")
    assert code == 0, err
    assert server.ranges and server.ranges[0] != "bytes=0-"
    assert len(real.load_sidd_small(tmp_path)) == 2


def test_a_download_that_keeps_failing_keeps_its_part_and_resumes_next_time(tmp_path, run_cli, server, tiny):
    name = tiny["polyu"].filename
    server.truncate[name] = 99
    code, _, err = fetch(run_cli, tmp_path, server, "polyu")
    one_line(code, err)
    assert "resume" in err
    assert (tmp_path / ".fetch" / "downloads" / (name + ".part")).is_file()
    nothing_accepted(run_cli, tmp_path, "polyu")
    server.truncate[name] = 0
    code, _, err = fetch(run_cli, tmp_path, server, "polyu")
    assert code == 0, err
    assert len(real.load_polyu(tmp_path)) == 2


def test_a_wrong_checksum_is_one_line_and_leaves_nothing(tmp_path, run_cli, server, tiny, monkeypatch):
    monkeypatch.setitem(F.ARCHIVES, "polyu", dataclasses.replace(tiny["polyu"], sha256="0" * 64))
    code, _, err = fetch(run_cli, tmp_path, server, "polyu")
    one_line(code, err)
    assert "SHA-256 mismatch" in err
    assert not list((tmp_path / ".fetch" / "downloads").iterdir())
    nothing_accepted(run_cli, tmp_path, "polyu")


def test_a_changed_archive_fails_against_the_hash_recorded_on_first_use(tmp_path, run_cli, server, tiny):
    assert fetch(run_cli, tmp_path, server, "nam")[0] == 0
    before = sorted(p.name for p in (tmp_path / "Nam" / "CC15").iterdir())
    server.serve(tiny["nam"], build("nam", pairs=3))
    code, _, err = fetch(run_cli, tmp_path, server, "nam", extra=("--force",))
    one_line(code, err)
    assert "recorded at the first download" in err
    assert sorted(p.name for p in (tmp_path / "Nam" / "CC15").iterdir()) == before  # the installed set is intact
    same_size = bytearray(build("nam"))
    same_size[len(same_size) // 2] ^= 0xFF
    server.serve(tiny["nam"], bytes(same_size))
    code, _, err = fetch(run_cli, tmp_path, server, "nam", extra=("--force",))
    one_line(code, err)
    assert "SHA-256 mismatch" in err and "recorded at the first download" in err
    assert sorted(p.name for p in (tmp_path / "Nam" / "CC15").iterdir()) == before


def test_404_is_one_line(tmp_path, run_cli, server, tiny):
    del server.files[tiny["div2k-train"].filename]
    code, _, err = fetch(run_cli, tmp_path, server, "div2k-train")
    one_line(code, err)
    assert "404" in err
    nothing_accepted(run_cli, tmp_path, "div2k-train")


@pytest.mark.parametrize("data", [b"not a zip at all" * 64, build("polyu")[:-40]], ids=["garbage", "cut-tail"])
def test_a_corrupt_archive_is_one_line_and_deleted(tmp_path, run_cli, server, tiny, data):
    server.serve(tiny["polyu"], data)
    code, _, err = fetch(run_cli, tmp_path, server, "polyu")
    one_line(code, err)
    assert "corrupt archive" in err
    assert not list((tmp_path / ".fetch" / "downloads").iterdir())
    nothing_accepted(run_cli, tmp_path, "polyu")


def test_fewer_images_than_published_installs_nothing(tmp_path, run_cli, server, tiny):
    server.serve(tiny["sidd-small"], build("sidd-small", pairs=1))
    code, _, err = fetch(run_cli, tmp_path, server, "sidd-small")
    one_line(code, err)
    assert "1 pairs" in err and "published count is 2" in err
    assert not list((tmp_path / ".fetch" / "downloads").iterdir())
    nothing_accepted(run_cli, tmp_path, "sidd-small")


def _failing_write(where: str, exc: BaseException, after: int = 0):
    calls = {"n": 0}
    real_write = F.write_chunk

    def write(f, data):
        if where in str(getattr(f, "name", "")):
            calls["n"] += 1
            if calls["n"] > after:
                raise exc
        real_write(f, data)
    return write


@pytest.mark.parametrize("where", [".part", "tmp-"], ids=["while-downloading", "while-extracting"])
def test_a_full_disk_is_one_line_and_leaves_nothing_accepted(tmp_path, run_cli, server, tiny, monkeypatch, where):
    monkeypatch.setattr(F, "write_chunk", _failing_write(where, OSError(errno.ENOSPC, "No space left on device")))
    code, _, err = fetch(run_cli, tmp_path, server, "div2k-valid")
    one_line(code, err)
    assert "no space left on device" in err
    assert not (tmp_path / "DIV2K" / "valid").exists()
    nothing_accepted(run_cli, tmp_path, "div2k-valid")


def test_ctrl_c_mid_extraction_is_one_line_and_installs_nothing(tmp_path, run_cli, server, tiny, monkeypatch):
    original = F.write_chunk
    monkeypatch.setattr(F, "write_chunk", _failing_write("tmp-", KeyboardInterrupt(), after=1))
    code, _, err = fetch(run_cli, tmp_path, server, "sidd-small")
    one_line(code, err)
    assert "interrupted while extracting" in err
    assert not (tmp_path / "SIDD_Small_sRGB_Only").exists()
    nothing_accepted(run_cli, tmp_path, "sidd-small")
    monkeypatch.setattr(F, "write_chunk", original)
    code, _, err = fetch(run_cli, tmp_path, server, "sidd-small")  # the complete archive is reused
    assert code == 0 and len(real.load_sidd_small(tmp_path)) == 2, err


def test_check_reports_incomplete_and_modified_sets(tmp_path, run_cli, server, tiny):
    assert fetch(run_cli, tmp_path, server, "polyu", "div2k-train")[0] == 0
    next((tmp_path / "PolyU" / "CroppedImages").glob("*_0_real.JPG")).unlink()
    (tmp_path / "PolyU" / "CroppedImages" / "Canon5D2_5_160_3200_chair_0_mean.JPG").unlink()
    code, out, _ = run_cli("data", "check", "polyu", "--data-root", tmp_path)
    assert code == 1 and "incomplete" in out and "1/2" in out
    (tmp_path / "DIV2K" / "train" / "0001.png").write_bytes(_img(seed=99))
    code, out, _ = run_cli("data", "check", "div2k-train", "--data-root", tmp_path)
    assert code == 0  # without --verify only counts and headers are read
    code, out, _ = run_cli("data", "check", "div2k-train", "--data-root", tmp_path, "--verify")
    assert code == 1 and "modified" in out


def test_unknown_set_and_no_set_are_one_line(tmp_path, run_cli):
    code, _, err = run_cli("data", "fetch", "kodak", "--data-root", tmp_path)
    one_line(code, err)
    assert "div2k-train" in err
    code, _, err = run_cli("data", "fetch", "--data-root", tmp_path)
    one_line(code, err)


def test_the_table_names_sources_and_only_published_checksums(run_cli):
    code, out, _ = run_cli("data", "fetch", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {"div2k-train", "div2k-valid", "sidd-small", "polyu", "nam"}
    assert rows["div2k-train"]["url"].startswith("https://data.vision.ee.ethz.ch/")
    assert all(r["sha256"] is None for n, r in rows.items() if not n.startswith("div2k"))
    assert Path(F.__file__).name == "fetch.py"
