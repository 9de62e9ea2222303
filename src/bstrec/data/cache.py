"""Where bstrec keeps data, and the processed cache of parsed data sets.

Layout under the data folder (``--data-dir``, else ``$BSTREC_DATA_DIR``, else the
user cache folder)::

    downloads/ml-1m.zip         verified archives (``.part`` while downloading)
    datasets/ml-1m/             unpacked data sets, found by name
    processed/<key>.npz         parsed data sets, keyed by the source files' md5
    processed/stat/<id>.json    (size, mtime) -> md5 memo, so a warm load skips hashing

``$BSTREC_CACHE_DIR`` moves ``processed/`` elsewhere. Nothing is ever written beside
the source files (they may be read-only, e.g. ../shared in CI).

The processed cache is content-addressed: the key is a digest of the format, the
reader version and every source file's md5, so it is rebuilt whenever a source
changes, and two copies of the same files share one entry. To avoid hashing large
files on every load, each file's md5 is memoised against its (size, mtime_ns); a
change that keeps both (rare: same size, clock reset) is the one case it misses,
and ``load_dataset(..., cache=False)`` or deleting ``processed/`` is the remedy.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bstrec.data.interactions import Dataset

# Bump when a reader's output or the Dataset layout changes: old entries then miss.
CACHE_VERSION = 3  # 3: ML-100K years from the titles


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("BSTREC_DATA_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("bstrec"))


def processed_dir(explicit: str | os.PathLike | None = None) -> Path:
    env = os.environ.get("BSTREC_CACHE_DIR")
    if explicit is None and env:
        return Path(env).expanduser() / "processed"
    return data_dir(explicit) / "processed"


def datasets_dir(explicit: str | os.PathLike | None = None) -> Path:
    return data_dir(explicit) / "datasets"


def downloads_dir(explicit: str | os.PathLike | None = None) -> Path:
    return data_dir(explicit) / "downloads"


# ---------------------------------------------------------------- md5 memo
def file_md5(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class SourceHashes:
    """md5 of each source file, and the memo entries to write if the load succeeds."""

    md5: dict[str, str] = field(default_factory=dict)
    pending: dict[Path, bytes] = field(default_factory=dict)


def hash_sources(sources: dict[str, Path], stat_dir: Path) -> SourceHashes:
    out = SourceHashes()
    for role, path in sources.items():
        st = path.stat()
        memo = stat_dir / (hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:24] + ".json")
        try:
            entry = json.loads(memo.read_text())
            if entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns:
                out.md5[role] = entry["md5"]
                continue
        except (OSError, ValueError, KeyError, TypeError):
            pass
        digest = file_md5(path)
        out.md5[role] = digest
        entry = {"path": str(path.resolve()), "size": st.st_size,
                 "mtime_ns": st.st_mtime_ns, "md5": digest}  # fmt: skip
        out.pending[memo] = json.dumps(entry).encode()
    return out


def cache_key(fmt: str, md5s: dict[str, str], options: dict | None = None) -> str:
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION};{fmt};".encode())
    for role in sorted(md5s):
        h.update(f"{role}={md5s[role]};".encode())
    h.update(json.dumps(options or {}, sort_keys=True).encode())
    return h.hexdigest()[:32]


# ---------------------------------------------------------------- npz (de)serialisation
_ARRAYS = ("user_ids", "item_ids", "user", "item", "rating", "timestamp", "user_offsets",
           "item_titles", "item_year", "item_genres")  # fmt: skip


def dataset_to_arrays(ds: Dataset) -> dict[str, np.ndarray]:
    """Plain numeric / unicode arrays only, so np.load never needs pickle."""
    arrays = {k: np.asarray(getattr(ds, k)) for k in _ARRAYS}
    for k in ("user_ids", "item_ids", "item_titles"):
        if arrays[k].dtype == object:
            arrays[k] = arrays[k].astype(str)
    for name, codes in ds.user_features.items():
        arrays[f"uf:{name}"] = np.asarray(codes, dtype=np.int32)
    unrated = list(ds.unrated_items.items())
    genre_pos = {g: i for i, g in enumerate(ds.genre_names)}
    genres = np.zeros((len(unrated), len(ds.genre_names)), dtype=bool)
    for r, (_, (_, _, gs)) in enumerate(unrated):
        genres[r, [genre_pos[g] for g in gs]] = True
    arrays["unrated_ids"] = np.asarray([k for k, _ in unrated], dtype=str)
    arrays["unrated_titles"] = np.asarray([v[0] for _, v in unrated], dtype=str)
    arrays["unrated_years"] = np.asarray([v[1] for _, v in unrated], dtype=np.int32)
    arrays["unrated_genres"] = genres
    meta = {
        "version": CACHE_VERSION,
        "name": ds.name,
        "genre_names": ds.genre_names,
        "user_vocab": ds.user_vocab,
        "checksum": ds.checksum,
        "sources": ds.sources,
    }
    arrays["meta"] = np.asarray(json.dumps(meta))
    return arrays


def dataset_from_arrays(a: dict[str, np.ndarray]) -> Dataset:
    meta = json.loads(str(a["meta"][()]))
    if meta.get("version") != CACHE_VERSION:
        raise ValueError("processed cache from another bstrec version")
    names = meta["genre_names"]
    unrated = {
        str(k): (str(t), int(y), [g for g, on in zip(names, row, strict=True) if on])
        for k, t, y, row in zip(
            a["unrated_ids"].tolist(), a["unrated_titles"].tolist(),
            a["unrated_years"].tolist(), a["unrated_genres"], strict=True,
        )
    }  # fmt: skip
    ds = Dataset(
        name=meta["name"],
        **{k: a[k] for k in _ARRAYS},
        genre_names=list(names),
        user_features={k[3:]: a[k] for k in a if k.startswith("uf:")},
        user_vocab={k: list(v) for k, v in meta["user_vocab"].items()},
        unrated_items=unrated,
        checksum=meta["checksum"],
        sources=dict(meta["sources"]),
    )
    ds.validate()
    return ds


def save_dataset(ds: Dataset, path: Path) -> None:
    """Write atomically: a crash leaves either the old entry or none, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **dataset_to_arrays(ds))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_saved(path: Path) -> Dataset | None:
    """The cached data set, or None when absent or unreadable (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return dataset_from_arrays({k: z[k] for k in z.files})
    except Exception:  # a truncated or foreign file is a cache miss, not an error
        return None
