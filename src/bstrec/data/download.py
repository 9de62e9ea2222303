"""Download and import MovieLens archives into the data folder.

Downloads go to ``downloads/NAME.zip.part`` and are renamed to ``NAME.zip`` only after
the size and md5 match, so a file that looks finished always is. An interrupted
download resumes from the partial file with an HTTP Range request. The archive is
unpacked to a temporary folder that is renamed into ``datasets/NAME`` once complete,
with a ``.bstrec.json`` marker written last: a folder without it is never used.

For tests and mirrors, the URL, md5 and size can be passed in (function arguments,
CLI options), and ``$BSTREC_MIRROR`` replaces the GroupLens base URL.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bstrec.data import cache as cache_mod
from bstrec.data.archives import MARKER, is_complete, known_archives, spec_for
from bstrec.data.interactions import DataError
from bstrec.data.loaders import LoadOptions, load_path, locate

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
CHUNK = 1 << 20


@dataclass(frozen=True)
class DownloadOptions:
    data_dir: Path | None = None
    url: str | None = None  # instead of the GroupLens URL (tests, mirrors)
    md5: str | None = None  # instead of the known md5 (then the known size is not used)
    size: int | None = None
    timeout: float = 10.0  # seconds to wait for the server; offline fails this fast
    progress: bool = True


@dataclass
class DownloadResult:
    name: str
    path: Path  # the unpacked data set
    cached: bool  # True when nothing had to be downloaded
    downloaded_bytes: int = 0
    resumed_from: int = 0
    archive: Path | None = None


def _timeout(default: float) -> float:
    env = os.environ.get("BSTREC_DOWNLOAD_TIMEOUT")
    return float(env) if env else default


def resolve(name: str, opts: DownloadOptions) -> tuple[str, str | None, int | None]:
    """(url, md5, size) after the caller's and the environment's overrides."""
    spec = spec_for(name)
    url = opts.url
    if url is None:
        mirror = os.environ.get("BSTREC_MIRROR")
        url = mirror.rstrip("/") + spec.url[len(GROUPLENS) :] if mirror else spec.url
    md5 = (opts.md5 or spec.md5 or "").lower() or None
    size = opts.size if opts.size is not None else (None if opts.md5 else spec.size)
    return url, md5, size


def download(name: str, opts: DownloadOptions | None = None) -> DownloadResult:
    opts = opts or DownloadOptions()
    url, md5, size = resolve(name, opts)
    dest = cache_mod.datasets_dir(opts.data_dir) / name
    if is_complete(dest):
        return DownloadResult(name, dest, cached=True)
    archive = cache_mod.downloads_dir(opts.data_dir) / f"{name}.zip"
    result = DownloadResult(name, dest, cached=False, archive=archive)
    timeout = _timeout(opts.timeout)
    if md5 is None:
        md5 = _published_md5(url, name, timeout)
    if archive.is_file() and _matches(archive, md5, size):
        result.cached = True  # verified earlier; only the unpacking was missing
    else:
        archive.unlink(missing_ok=True)
        result.resumed_from, result.downloaded_bytes = _fetch(
            url, archive, name, md5, size, timeout, opts.progress
        )
    unpack(archive, dest, {"name": name, "url": url, "md5": md5})
    return result


def _matches(path: Path, md5: str, size: int | None) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return cache_mod.file_md5(path) == md5


def _offline_message(name: str, url: str, reason: object) -> str:
    spec = known_archives().get(name)
    figures = ""
    if spec is not None and spec.md5:
        size = f"{spec.size:,} bytes, " if spec.size else ""
        figures = f" ({size}md5 {spec.md5})"
    return (
        f"cannot download {name} from {url}: {reason}. Offline? Fetch {url}{figures} on a "
        f"machine with internet, copy it here and run `bstrec data import {name}.zip` "
        "(a zip or its unpacked folder)"
    )


def _open(url: str, headers: dict, timeout: float, name: str):
    req = urllib.request.Request(url, headers={"User-Agent": "bstrec", **headers})
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError) as e:
        raise DataError(_offline_message(name, url, getattr(e, "reason", e))) from None


def _published_md5(url: str, name: str, timeout: float) -> str:
    """GroupLens publishes NAME.zip.md5 ('MD5 (ml-x.zip) = hex' or 'hex  ml-x.zip')."""
    try:
        with _open(url + ".md5", {}, timeout, name) as resp:
            text = resp.read(4096).decode("ascii", "replace")
    except urllib.error.HTTPError as e:
        raise DataError(
            f"{name}: no known md5 and {url}.md5 answered HTTP {e.code}; pass --md5 HEX "
            "to verify against a checksum you trust"
        ) from None
    m = re.search(r"\b([0-9a-fA-F]{32})\b", text)
    if not m:
        raise DataError(f"{name}: {url}.md5 holds no md5: {text[:80]!r}")
    return m.group(1).lower()


def _fetch(url, archive: Path, name, md5, size, timeout, progress) -> tuple[int, int]:
    """Download into NAME.zip.part (resuming it), verify, rename. -> (resumed_from, bytes)."""
    part = archive.with_name(archive.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    resumed_from, got = 0, 0
    if not (size is not None and have == size):
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            resp = _open(url, headers, timeout, name)
        except urllib.error.HTTPError as e:
            if not (e.code == 416 and have):  # 416: nothing past our end, part may be whole
                raise DataError(
                    f"cannot download {name} from {url}: HTTP {e.code} {e.reason}"
                ) from None
            resp = None
        if resp is not None:
            with resp:
                # a server that ignores Range answers 200 with the whole file: start over
                append = have > 0 and resp.status == 206
                resumed_from = have if append else 0
                length = resp.headers.get("Content-Length")
                total = size or (resumed_from + int(length) if length else None)
                expected = int(length) if length else None
                got = _stream(resp, part, append, total, resumed_from, name, url, progress,
                              expected)  # fmt: skip
    actual_size = part.stat().st_size
    actual_md5 = cache_mod.file_md5(part)
    if (size is not None and actual_size != size) or actual_md5 != md5:
        part.unlink(missing_ok=True)
        expected = f"md5 {md5}" + (f", {size:,} bytes" if size is not None else "")
        raise DataError(
            f"{name}: downloaded file does not match its checksum (expected {expected}; "
            f"got md5 {actual_md5}, {actual_size:,} bytes); deleted it, run the command "
            "again to retry"
        )
    os.replace(part, archive)
    return resumed_from, got


def _stream(resp, part: Path, append, total, initial, name, url, progress, expected) -> int:
    from tqdm import tqdm

    def interrupted(why) -> DataError:
        # the .part stays, so the next call resumes where this one stopped
        return DataError(
            f"download of {name} from {url} interrupted after {initial + got:,} bytes "
            f"({why}); run the command again to resume"
        )

    got = 0
    with (
        open(part, "ab" if append else "wb") as f,
        tqdm(
            total=total,
            initial=initial,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=name,
            disable=not progress,
            leave=False,
        ) as bar,  # fmt: skip
    ):
        try:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise interrupted(e) from None
    # http.client's read(n) returns b"" on a dropped connection instead of raising
    if expected is not None and got < expected:
        raise interrupted(f"connection closed, {expected - got:,} bytes short")
    return got


# ---------------------------------------------------------------- unpack / import
def unpack(archive: Path, dest: Path, marker: dict) -> None:
    """Extract into a temporary sibling, then rename into place (flattening the archive's
    single top folder, e.g. ml-1m/ratings.dat -> datasets/ml-1m/ratings.dat)."""
    tmp = _fresh_tmp(dest)
    try:
        try:
            with zipfile.ZipFile(archive) as z:
                _extract(z, tmp)
        except zipfile.BadZipFile as e:
            raise DataError(f"{archive}: not a valid zip archive ({e})") from None
        _finish(tmp, dest, marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fresh_tmp(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _extract(z: zipfile.ZipFile, out: Path) -> None:
    members = [
        m for m in z.infolist()
        if not m.is_dir() and not m.filename.startswith("__MACOSX/")
        and not Path(m.filename).name.startswith("._")
    ]  # fmt: skip
    tops = {m.filename.split("/", 1)[0] for m in members}
    strip = len(tops) == 1 and all("/" in m.filename for m in members)
    root = out.resolve()
    for m in members:
        rel = m.filename.split("/", 1)[1] if strip else m.filename
        target = (out / rel).resolve()
        if root not in target.parents:  # "zip slip": ../ or absolute names
            raise DataError(f"{z.filename}: refusing member outside the archive: {m.filename!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with z.open(m) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)


def _finish(tmp: Path, dest: Path, marker: dict) -> None:
    (tmp / MARKER).write_text(json.dumps(marker, indent=2))
    old = None
    if dest.exists():  # a previous import of the same name, or an unfinished leftover
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def import_dataset(
    path: str | os.PathLike, name: str | None = None, data_dir: str | os.PathLike | None = None
) -> Path:
    """Copy a MovieLens zip or folder into the data folder under ``name``.

    The copy is read in full first; if that fails nothing is left in the data folder.
    A zip named like a known archive must match its published md5.
    """
    src = Path(path).expanduser()
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    is_zip = src.is_file() and zipfile.is_zipfile(src)
    if not (is_zip or src.is_dir()):
        raise DataError(f"{src}: expected a MovieLens .zip archive or an unpacked folder")
    name = name or (src.name[: -len(".zip")] if src.name.lower().endswith(".zip") else src.name)
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
        raise DataError(f"{name!r}: a data set name may use letters, digits, '.', '_' and '-'")
    marker: dict = {"name": name, "imported_from": str(src.resolve())}
    spec = known_archives().get(name)
    if is_zip:
        digest = cache_mod.file_md5(src)
        marker["md5"] = digest
        if spec is not None and spec.md5 and digest != spec.md5:
            raise DataError(
                f"{src}: md5 {digest} is not the published {spec.md5} of {name}.zip; "
                f"import it under another name with --name if it is a different data set"
            )
    dest = cache_mod.datasets_dir(data_dir) / name
    tmp = _fresh_tmp(dest)
    try:
        if is_zip:
            with zipfile.ZipFile(src) as z:
                _extract(z, tmp)
        else:
            _, folder = locate(src)
            for f in folder.iterdir():
                if f.is_file() and not f.name.startswith("."):
                    shutil.copy2(f, tmp / f.name)
        fmt, folder = locate(tmp)
        if folder != tmp:  # a zip with more than one level of folders
            for f in folder.iterdir():
                os.replace(f, tmp / f.name)
            shutil.rmtree(folder)
        load_path(tmp, LoadOptions(cache=False, name=name))  # raises on bad data
        marker["format"] = fmt
        _finish(tmp, dest, marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
