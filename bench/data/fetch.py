"""``bench data fetch``: download the real data sets, verify them and lay them out as the loaders read them.

Each set is one archive from its official source (``ARCHIVES``; datasets/README.md names them).
Downloads go through :func:`pooch.retrieve` with a downloader of our own that resumes a partial file
with an HTTP Range request, so an interrupted multi-gigabyte download is not started over.

Checksums: where a checksum is published (DIV2K: TensorFlow Datasets' ``url_checksums/div2k.txt``),
the archive must match it. Where none is published, the SHA-256 of the first download that passes
every check (size, archive integrity, image count) is recorded in ``<root>/.fetch/lock.json`` and
every later download is verified against it — trust on first use, said so in the lock file.

Installing is all or nothing: the archive is extracted into ``<root>/.fetch/tmp-<set>/``, the set's
folder is built there (renamed into the loaders' layout, its images counted), a manifest of file
hashes (``.fetched.json``, read by ``bench data check --verify``) is written inside it, and only then
is it renamed into place — one atomic rename on the same file system. Any failure, Ctrl-C included,
removes the staging folder; a partial *download* is kept under ``<root>/.fetch/downloads/`` for the
next attempt to resume, and no check ever reads it.

Why one module of ~640 lines: download, resume, verify and the all-or-nothing install are one
transaction per set around one lock file; split, that contract would span modules.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from bench.core.errors import DataError
from bench.core.progress import duration, interval
from bench.data import real

MIRROR_ENV = "TTAID_DATA_MIRROR"
"""A base URL that replaces every set's host: ``$TTAID_DATA_MIRROR/<archive file name>``."""
FETCH_DIR = ".fetch"
MANIFEST = ".fetched.json"
CHUNK = 1 << 20
RETRIES = 2
"""Extra attempts, each resuming where the last stopped, before a download is given up."""
TIMEOUT = 60.0


@dataclass(frozen=True)
class Archive:
    """One data set's archive: where it comes from, what is published about it, how it is laid out."""

    name: str
    url: str
    source: str
    """Who publishes the archive (for datasets/README.md and error messages)."""
    member: str
    """The folder inside the archive that becomes the set: a path, or ``**/path`` at any depth."""
    install: str
    """Where the set goes under the data root (the folder :mod:`bench.data.real` reads, or one inside it)."""
    expected: int
    """Image count (pairs for paired sets) published by the authors."""
    sha256: str | None = None
    size: int | None = None
    checksum_source: str | None = None
    keep: Callable[[str], bool] | None = None
    """Which files of the member folder to install (default: all)."""
    file: str | None = None
    """The archive's file name here and on a mirror (default: the URL's last part)."""

    @property
    def filename(self) -> str:
        return self.file or self.url.rstrip("/").rsplit("/", 1)[-1]


def _nam_pair_file(name: str) -> bool:
    low = name.lower()
    return low.endswith(("_real.png", "_mean.png"))


_TFDS = "TensorFlow Datasets, tensorflow_datasets/url_checksums/div2k.txt"

ARCHIVES: dict[str, Archive] = {
    a.name: a
    for a in (
        Archive("div2k-train", "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",
                "ETH Zurich CVL, DIV2K (data.vision.ee.ethz.ch/cvl/DIV2K)", "DIV2K_train_HR", "DIV2K/train", 800,
                sha256="9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335", size=3530603713,
                checksum_source=_TFDS),
        Archive("div2k-valid", "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip",
                "ETH Zurich CVL, DIV2K (data.vision.ee.ethz.ch/cvl/DIV2K)", "DIV2K_valid_HR", "DIV2K/valid", 100,
                sha256="20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc", size=448993893,
                checksum_source=_TFDS),
        Archive("sidd-small", "http://130.63.97.225/share/SIDD_Small_sRGB_Only.zip",
                "York University, the SIDD site's download server (www.eecs.yorku.ca/~kamel/sidd)",
                "**/SIDD_Small_sRGB_Only", "SIDD_Small_sRGB_Only", 160),
        Archive("polyu", "https://github.com/csjunxu/PolyU-Real-World-Noisy-Images-Dataset/archive/refs/heads/master.zip",
                "the authors' GitHub repository csjunxu/PolyU-Real-World-Noisy-Images-Dataset",
                "**/CroppedImages", "PolyU/CroppedImages", 100, file="PolyU-Real-World-Noisy-Images-Dataset-master.zip"),
        Archive("nam", "https://github.com/csjunxu/MCWNNM-ICCV2017/archive/refs/heads/master.zip",
                "CC15, the 15 crops of Nam et al.'s CC images used in the denoising literature, in "
                "Real_ccnoise_denoised_part/ of github.com/csjunxu/MCWNNM-ICCV2017",
                "**/Real_ccnoise_denoised_part", "Nam/CC15", 15, keep=_nam_pair_file, file="MCWNNM-ICCV2017-master.zip"),
    )
}
ALL = "all"


def get_archive(name: str) -> Archive:
    try:
        return ARCHIVES[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; expected {', '.join(ARCHIVES)} or {ALL}") from None


def expand(names: Iterable[str]) -> list[Archive]:
    """The archives ``names`` stand for (``all``: every set), each once, in table order."""
    wanted = list(names)
    if not wanted:
        raise DataError(f"no data set named; expected one or more of {', '.join(ARCHIVES)} or {ALL}")
    if ALL in wanted:
        return list(ARCHIVES.values())
    return [get_archive(n) for n in dict.fromkeys(wanted)]


def mirror_base(override: str | None = None) -> str | None:
    """The mirror base URL: ``--mirror``, else ``$TTAID_DATA_MIRROR``, else None (the official sources)."""
    base = override or os.environ.get(MIRROR_ENV, "")
    return base.rstrip("/") or None


def url_of(archive: Archive, mirror: str | None) -> str:
    return f"{mirror}/{archive.filename}" if mirror else archive.url


# --- small helpers -------------------------------------------------------------------------------


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def write_chunk(f: BinaryIO, data: bytes) -> None:
    """Every byte fetch writes goes through here (one place where a full disk shows up)."""
    f.write(data)


def disk_error(exc: OSError, path: Path, what: str) -> DataError:
    if exc.errno == errno.ENOSPC:
        return DataError(f"{path}: no space left on device while {what}; free some space and run the same "
                         "command again")
    return DataError(f"{path}: cannot write while {what} ({exc.strerror or exc})")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(e, path, "writing") from None


# --- progress --------------------------------------------------------------------------------------


class Progress:
    """Bytes or files done: a Rich bar on a terminal, else a line on stdout about every ``interval()`` s."""

    def __init__(self, desc: str, total: int | None, unit: str = "bytes", quiet: bool = False) -> None:
        self.desc, self.total, self.unit, self.quiet = desc, total, unit, quiet
        self.done, self.start = 0, time.monotonic()
        self.last = self.start
        self.bar = None
        if quiet:
            return
        from rich.console import Console

        if Console().is_terminal:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as Bar

            cols = ([DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn()])
            self.bar = Bar(TextColumn("{task.description}", markup=False), BarColumn(), *cols, TimeRemainingColumn(),
                           transient=True)
            self.bar.start()
            self.task = self.bar.add_task(desc, total=total)
        else:
            self.line(f"start ({self.amount(total) if total else 'size unknown'})")

    def amount(self, n: int | None) -> str:
        return "?" if n is None else (human(n) if self.unit == "bytes" else f"{n} {self.unit}")

    def line(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {self.desc}: {text}", flush=True)

    def advance(self, n: int) -> None:
        self.done += n
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
            return
        now = time.monotonic()
        if now - self.last >= interval():
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            part = f"{self.amount(self.done)} of {self.amount(self.total)}"
            if self.total:
                part += f" ({100 * self.done / self.total:.0f}%)"
                if rate > 0:
                    part += f", left ~{duration((self.total - self.done) / rate)}"
            if self.unit == "bytes":
                part += f", {human(rate)}/s"
            self.line(part)

    def close(self, ok: bool = True) -> None:
        if self.bar is not None:
            self.bar.stop()
        elif not self.quiet and ok:
            self.line(f"done, {self.amount(self.done)} in {duration(time.monotonic() - self.start)}")


# --- downloading ---------------------------------------------------------------------------------


class Incomplete(Exception):
    """The server closed the connection before the whole file arrived."""


class RangeDownloader:
    """A pooch downloader that keeps the bytes it got in ``part`` and asks only for the rest (HTTP Range)."""

    def __init__(self, part: Path, expected_size: int | None, desc: str, quiet: bool,
                 size_source: str = "published") -> None:
        self.part, self.expected_size, self.desc, self.quiet = part, expected_size, desc, quiet
        self.size_source = size_source
        self.sha256: str | None = None
        self.resumed_from = 0

    def __call__(self, url: str, output_file: str, pooch: Any, check_only: bool = False) -> None:
        import requests

        last_error = ""
        for attempt in range(RETRIES + 1):
            have = self.part.stat().st_size if self.part.exists() else 0
            try:
                if self._get(requests, url, have):
                    break
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    Incomplete) as e:
                last_error = str(e).splitlines()[0] if str(e) else type(e).__name__
        else:
            got = self.part.stat().st_size if self.part.exists() else 0
            of = f" of {human(self.expected_size)}" if self.expected_size else ""
            raise DataError(f"{url}: download stopped after {human(got)}{of} ({last_error}); the partial file "
                            f"{self.part} is kept: run the same command again to resume")
        self.sha256 = sha256_of(self.part)
        os.replace(self.part, output_file)  # pooch checks the hash, then moves it into place

    def _get(self, requests: Any, url: str, have: int) -> bool:
        """One request for the missing bytes; True when the file is complete."""
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT) as r:
            if r.status_code == 416 and have and self.expected_size == have:
                return True
            if r.status_code == 416:  # the partial file is not a prefix of this file: start over
                self.part.unlink()
                raise Incomplete("the server refused to resume; starting over")
            if r.status_code == 404:
                raise DataError(f"{url}: 404 Not Found; the file is not at this address (check --mirror or "
                                f"${MIRROR_ENV}, or the source in datasets/README.md)")
            if r.status_code >= 400:
                raise DataError(f"{url}: HTTP {r.status_code} {r.reason}; the download did not start")
            resume = have > 0 and r.status_code == 206
            if have and not resume:
                have = 0  # the server ignored the Range header: the whole file comes again
            total = self._total(r, have)
            if self.expected_size and total and total != self.expected_size:
                raise DataError(f"{url}: the server offers {total} bytes, the size {self.size_source} is "
                                f"{self.expected_size}; not the expected file (check --mirror)")
            if resume:
                self.resumed_from = have
            progress = Progress(self.desc, total or self.expected_size, quiet=self.quiet)
            progress.advance(have)
            ok = False
            try:
                with open(self.part, "ab" if resume else "wb") as f:
                    for chunk in self._chunks(r):
                        try:
                            write_chunk(f, chunk)
                        except OSError as e:
                            raise disk_error(e, self.part, "downloading (the partial file is kept)") from None
                        progress.advance(len(chunk))
                size = self.part.stat().st_size
                if total is not None and size < total:
                    raise Incomplete(f"connection closed at {human(size)} of {human(total)}")
                ok = True
            finally:
                progress.close(ok)
        return True

    @staticmethod
    def _chunks(r: Any) -> Iterator[bytes]:
        """The body as it arrives (``read1``: what came before a dropped connection is kept for resuming)."""
        import urllib3

        raw = r.raw
        if not hasattr(raw, "read1"):
            yield from r.iter_content(CHUNK)
            return
        while True:
            try:
                block = raw.read1(CHUNK, decode_content=True)
            except urllib3.exceptions.HTTPError as e:
                raise Incomplete(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
            if not block:
                return
            yield block

    @staticmethod
    def _total(r: Any, have: int) -> int | None:
        cr = r.headers.get("Content-Range", "")
        if r.status_code == 206 and "/" in cr and cr.rsplit("/", 1)[1].isdigit():
            return int(cr.rsplit("/", 1)[1])
        length = r.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None


def downloads_dir(root: Path) -> Path:
    return root / FETCH_DIR / "downloads"


def lock_path(root: Path) -> Path:
    return root / FETCH_DIR / "lock.json"


def read_lock(root: Path) -> dict[str, Any]:
    path = lock_path(root)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable lock file ({e}); fix or delete it (hashes are recorded again "
                        "on the next download)") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping of set name -> recorded hash")
    return data


def known_hash(archive: Archive, root: Path) -> tuple[str | None, str]:
    """(sha256, where it comes from): the published one, else the one recorded in the lock file."""
    if archive.sha256:
        return archive.sha256, f"published by {archive.checksum_source}"
    entry = read_lock(root).get(archive.name)
    if isinstance(entry, dict) and entry.get("sha256"):
        return str(entry["sha256"]), f"recorded at the first download in {lock_path(root)}"
    return None, "none published; recorded after this download"


def download(archive: Archive, url: str, root: Path, quiet: bool = False) -> tuple[Path, str]:
    """The archive's file under ``<root>/.fetch/downloads/`` and its SHA-256, verified when a hash is known."""
    import pooch

    pooch.get_logger().setLevel("WARNING")
    folder = downloads_dir(root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_error(e, folder, "creating the download folder") from None
    target = folder / archive.filename
    expected, where = known_hash(archive, root)
    size = archive.size or (read_lock(root).get(archive.name) or {}).get("bytes")
    size_source = "published" if archive.size else "recorded at the first download"
    if not target.exists() and size:
        part = folder / (archive.filename + ".part")
        need = size - (part.stat().st_size if part.exists() else 0) + size  # the rest, then the extracted set
        free = shutil.disk_usage(folder).free
        if free < need:
            raise DataError(f"{folder}: {human(free)} free, {archive.name} needs about {human(need)} "
                            "(download and extracted set); free some space and run the same command again")
    downloader = RangeDownloader(folder / (archive.filename + ".part"), size, f"fetch {archive.name}", quiet,
                                 size_source)
    try:
        path = Path(pooch.retrieve(url, known_hash=expected, fname=archive.filename, path=folder,
                                   downloader=downloader, progressbar=False))
    except ValueError as e:  # pooch: the hash does not match (it has deleted the file)
        got = f" got {downloader.sha256}," if downloader.sha256 else ""
        if "hash" in str(e).lower():
            raise DataError(f"{url}: SHA-256 mismatch:{got} expected {expected} ({where}); the download was "
                            "deleted — run again, or check the mirror") from None
        raise DataError(f"{url}: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise disk_error(e, folder / archive.filename, "downloading") from None
    return path, downloader.sha256 or sha256_of(path)


# --- installing ----------------------------------------------------------------------------------


def copy_stream(src: BinaryIO, dst: Path) -> None:
    with open(dst, "wb") as out:
        for block in iter(lambda: src.read(CHUNK), b""):
            write_chunk(out, block)


def _safe_member(name: str, archive: Path) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts:
        raise DataError(f"{archive}: member {name!r} points outside the archive; refusing to extract it")
    return p


def _member_prefix(names: list[str], member: str, archive: Path) -> str:
    """The archive path of the set's folder: ``member`` exactly, or for ``**/X`` the shallowest folder
    whose path ends with X (a GitHub archive's top folder carries the branch name)."""
    dirs = set()
    for n in names:
        parts = PurePosixPath(n).parts if n.endswith("/") else PurePosixPath(n).parts[:-1]
        dirs |= {"/".join(parts[:k]) for k in range(1, len(parts) + 1)}
    if member.startswith("**/"):
        tail = member[3:]
        hits = sorted((d for d in dirs if d == tail or d.endswith("/" + tail)), key=lambda d: (d.count("/"), d))
    else:
        hits = [member] if member in dirs else []
    if not hits:
        raise DataError(f"{archive}: no folder {member!r} in the archive; not the expected archive "
                        "(check --mirror), or a changed release")
    return hits[0]


def extract(archive_file: Archive, path: Path, staging: Path, quiet: bool) -> Path:
    """Extract the set's folder of ``path`` into ``staging/set``; returns that folder."""
    out = staging / "set"
    try:
        with zipfile.ZipFile(path) as z:
            infos = [i for i in z.infolist() if not i.is_dir()]
            for i in infos:
                _safe_member(i.filename, path)
            prefix = _member_prefix([i.filename for i in z.infolist()], archive_file.member, path)
            mine = [i for i in infos if i.filename.startswith(prefix + "/")]
            if archive_file.keep is not None:
                mine = [i for i in mine if archive_file.keep(PurePosixPath(i.filename).name)]
            progress = Progress(f"extract {archive_file.name}", len(mine), unit="files", quiet=quiet)
            ok = False
            try:
                for i in mine:
                    dst = out / PurePosixPath(i.filename).relative_to(prefix)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(i) as src:
                        copy_stream(src, dst)
                    progress.advance(1)
                ok = True
            finally:
                progress.close(ok)
    except zipfile.BadZipFile as e:
        path.unlink(missing_ok=True)
        raise DataError(f"{path}: corrupt archive ({e}); it was deleted — run the same command again to "
                        "download it anew") from None
    except OSError as e:
        raise disk_error(e, staging, f"extracting {path.name} (nothing was installed)") from None
    return out


def count(archive: Archive, folder: Path) -> int:
    """Images (pairs) of a staged set as its loader would find them, or a DataError."""
    probe = folder.parent / "probe"
    dest = probe / archive.install
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(folder, dest)
    try:
        return len(real.get_set(archive.name).scan(probe))
    finally:
        os.rename(dest, folder)


def manifest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_of(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


@dataclass
class Result:
    name: str
    path: Path
    count: int
    sha256: str
    hash_source: str
    skipped: bool = False


def installed(archive: Archive, root: Path) -> bool:
    return (root / archive.install).exists()


@contextmanager
def staging_dir(root: Path, name: str) -> Iterator[Path]:
    """A fresh ``<root>/.fetch/tmp-<name>``, removed afterwards whatever happens (Ctrl-C included)."""
    path = root / FETCH_DIR / f"tmp-{name}"
    shutil.rmtree(path, ignore_errors=True)  # left by a killed process
    try:
        path.mkdir(parents=True)
    except OSError as e:
        raise disk_error(e, path, "creating the staging folder") from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fetch(archive: Archive, root: Path, mirror: str | None = None, force: bool = False, keep_archive: bool = False,
          quiet: bool = False) -> Result:
    """Download, verify and install one set (see the module docstring)."""
    dest = root / archive.install
    if dest.exists() and not force:
        return Result(archive.name, dest, 0, "", "", skipped=True)
    url = url_of(archive, mirror)
    stage = "downloading"
    try:
        path, digest = download(archive, url, root, quiet)
        expected, where = known_hash(archive, root)
        if archive.size and path.stat().st_size != archive.size:
            path.unlink(missing_ok=True)
            raise DataError(f"{url}: {path.stat().st_size if path.exists() else 0} bytes, the published size is "
                            f"{archive.size}; the download was deleted — run again")
        stage = "extracting"
        with staging_dir(root, archive.name) as staging:
            folder = extract(archive, path, staging, quiet)
            n = count(archive, folder)
            if n != archive.expected:
                if not keep_archive:  # it would only be found (and fail) again
                    path.unlink(missing_ok=True)
                raise DataError(f"{path}: {n} {'pairs' if real.get_set(archive.name).paired else 'images'} in "
                                f"{archive.member}, the published count is {archive.expected}; nothing was "
                                "installed (a partial or changed archive)")
            files = manifest(folder)
            write_json(folder / MANIFEST, {"set": archive.name, "url": url, "archive_sha256": digest,
                                           "files": files})
            old = None
            if dest.exists():
                old = staging / "old"
                os.rename(dest, old)
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.rename(folder, dest)
            except OSError as e:
                if old is not None:
                    os.rename(old, dest)
                raise disk_error(e, dest, "moving the set into place") from None
        if expected is None:
            lock = read_lock(root)
            lock[archive.name] = {"sha256": digest, "bytes": os.path.getsize(path), "file": archive.filename,
                                  "url": url, "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                  "how": "trust on first use: no checksum is published; this is the SHA-256 of the "
                                         "first download that passed the size, archive and image-count checks"}
            write_json(lock_path(root), lock)
            where = f"recorded now in {lock_path(root)} (none published)"
        if not keep_archive:
            path.unlink(missing_ok=True)
        return Result(archive.name, dest, n, digest, where)
    except KeyboardInterrupt:
        if stage == "extracting":
            raise DataError(f"{archive.name}: interrupted while extracting; nothing was installed in {dest} "
                            "(the staging folder was removed) — run the same command again") from None
        raise DataError(f"{archive.name}: interrupted while downloading; the partial file is kept under "
                        f"{downloads_dir(root)} — run the same command again to resume") from None


# --- verifying -----------------------------------------------------------------------------------


def verify(name: str, root: Path) -> str | None:
    """None when the installed set matches its manifest; else what differs (one line).

    A set that ``fetch`` did not install (no manifest) cannot be verified: that is said, not failed."""
    archive = get_archive(name)
    folder = root / archive.install
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{path}: unreadable manifest ({e})"
    for rel, digest in recorded.items():
        f = folder / rel
        if not f.is_file():
            return f"{f}: missing (listed in {path})"
        if sha256_of(f) != digest:
            return f"{f}: SHA-256 differs from the one recorded when it was fetched"
    return None


def has_manifest(name: str, root: Path) -> bool:
    return (root / get_archive(name).install / MANIFEST).is_file()


def describe() -> list[dict[str, Any]]:
    """One record per set: its source, URL, published size and checksum (for docs and ``--json``)."""
    return [{"name": a.name, "url": a.url, "source": a.source, "expected": a.expected, "bytes": a.size,
             "sha256": a.sha256, "checksum_source": a.checksum_source or "none published (trust on first use)",
             "install": a.install} for a in ARCHIVES.values()]


__all__ = [
    "ALL",
    "ARCHIVES",
    "MIRROR_ENV",
    "Archive",
    "Result",
    "describe",
    "expand",
    "fetch",
    "get_archive",
    "has_manifest",
    "installed",
    "mirror_base",
    "read_lock",
    "url_of",
    "verify",
]
