"""``load_dataset``: find the format of a folder or file and read it into a Dataset.

Formats: ``ml-1m`` (ratings.dat, movies.dat, users.dat; also ML-10M), ``ml-100k``
(u.data, u.item, u.user), ``ml-csv`` (ratings.csv, movies.csv: ml-20m, ml-25m,
ml-32m, ml-latest-small) and ``interactions`` (a user's own CSV/TSV/parquet file,
see :mod:`bstrec.data.custom`). A name such as ``ml-1m`` is looked up among the data
sets that ``bstrec data download`` / ``import`` put in the data folder.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bstrec.atomic import atomic_write_bytes
from bstrec.data import cache as cache_mod
from bstrec.data.archives import is_complete, known_archives
from bstrec.data.interactions import DataError, Dataset, build_dataset
from bstrec.data.readers import (
    check_known_items,
    read_csv_movies,
    read_csv_ratings,
    read_ml1m_movies,
    read_ml1m_ratings,
    read_ml1m_users,
    read_ml100k_items,
    read_ml100k_ratings,
    read_ml100k_users,
)

# (ratings file, item file, user file or None) of each MovieLens layout
LAYOUTS = {
    "ml-1m": ("ratings.dat", "movies.dat", "users.dat"),
    "ml-100k": ("u.data", "u.item", "u.user"),
    "ml-csv": ("ratings.csv", "movies.csv", None),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class LoadOptions:
    items: Path | None = None  # item features file for an interactions file
    users: Path | None = None  # user features file for an interactions file
    cache: bool = True  # read / write the processed cache
    data_dir: Path | None = None  # the data folder (downloads, imports, caches)
    name: str | None = None  # the data set's name (default: folder or file name)


def _layout_of(folder: Path) -> str | None:
    for fmt, (ratings, _, _) in LAYOUTS.items():
        if (folder / ratings).is_file():
            return fmt
    return None


def locate(path: Path) -> tuple[str, Path]:
    """(format, the folder or file to read). A folder holding exactly one sub-folder
    with MovieLens files (an archive unpacked as is) is read from that sub-folder."""
    if path.is_dir():
        fmt = _layout_of(path)
        if fmt:
            return fmt, path
        subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subdirs) == 1 and (fmt := _layout_of(subdirs[0])):
            return fmt, subdirs[0]
        raise DataError(
            f"{path}: no MovieLens files found (expected ratings.dat, u.data or ratings.csv)"
        )
    if path.is_file():
        from bstrec.data.custom import SUFFIXES

        if path.suffix.lower() in SUFFIXES:
            return "interactions", path
        raise DataError(
            f"{path}: unsupported file type {path.suffix!r} (use .csv, .tsv or .parquet)"
        )
    raise DataError(f"{path}: no such file or folder")


def source_files(fmt: str, path: Path, opts: LoadOptions) -> dict[str, Path]:
    """The files a load reads, keyed as the Dataset's ``sources`` will be."""
    if fmt == "interactions":
        out = {"interactions": path}
        if opts.items is not None:
            out["items"] = Path(opts.items)
        if opts.users is not None:
            out["users"] = Path(opts.users)
        return out
    return {n: path / n for n in LAYOUTS[fmt] if n is not None and (path / n).is_file()}


def load_movielens(folder: Path, fmt: str, name: str | None = None) -> Dataset:
    readers: dict[str, tuple[Callable, Callable, Callable]] = {
        "ml-1m": (read_ml1m_ratings, read_ml1m_movies, read_ml1m_users),
        "ml-100k": (read_ml100k_ratings, read_ml100k_items, read_ml100k_users),
        "ml-csv": (read_csv_ratings, read_csv_movies, None),
    }
    read_ratings, read_items, read_users = readers[fmt]
    ratings_name, items_name, users_name = LAYOUTS[fmt]
    ratings_path = folder / ratings_name
    items_path = folder / items_name
    cols, r_md5 = read_ratings(ratings_path)
    sources = {ratings_name: r_md5}
    if fmt == "ml-csv" and not items_path.is_file():
        # movies.csv is optional in a hand-made folder: ids only, no titles or genres
        from bstrec.data.interactions import ItemTable

        items = ItemTable.placeholder(cols["item"])
    else:
        items, sources[items_name] = read_items(items_path)
        check_known_items(
            cols["item"], items, ratings_path, items_path, skip_header=fmt == "ml-csv"
        )
    users = None
    if users_name is not None and (folder / users_name).is_file():
        users, sources[users_name] = read_users(folder / users_name)
    return build_dataset(
        name or folder.name,
        cols["user"],
        cols["item"],
        cols["rating"],
        cols["timestamp"],
        items,
        users,
        sources,
    )


def parse(fmt: str, path: Path, opts: LoadOptions) -> Dataset:
    """Read the source files; no cache involved."""
    if fmt == "interactions":
        from bstrec.data.custom import load_interactions

        return load_interactions(path, opts.items, opts.users, opts.name)
    return load_movielens(path, fmt, opts.name)


def load_path(path: Path, opts: LoadOptions | None = None) -> Dataset:
    opts = opts or LoadOptions()
    fmt, target = locate(Path(path))
    if fmt != "interactions" and (opts.items is not None or opts.users is not None):
        raise DataError(f"{path}: items= / users= files apply to an interactions file only")
    if opts.name is None:
        path = Path(path)
        opts = replace(opts, name=path.stem if fmt == "interactions" else path.name)
    if not opts.cache:
        return parse(fmt, target, opts)
    sources = source_files(fmt, target, opts)
    missing = [p for p in sources.values() if not p.is_file()]
    if missing:
        return parse(fmt, target, opts)  # raises the reader's own "file not found"
    pdir = cache_mod.processed_dir(opts.data_dir)
    hashes = cache_mod.hash_sources(sources, pdir / "stat")
    entry = pdir / f"{cache_mod.cache_key(fmt, hashes.md5)}.npz"
    ds = cache_mod.load_saved(entry)
    if ds is None:
        ds = parse(fmt, target, opts)
        # a file that changed while we read it would poison the entry: skip writing then
        if ds.sources == hashes.md5:
            _write_quietly(lambda: cache_mod.save_dataset(ds, entry))
        else:
            return ds
    ds.name = opts.name
    for memo, data in hashes.pending.items():
        _write_quietly(lambda memo=memo, data=data: atomic_write_bytes(memo, data))
    return ds


def _write_quietly(write: Callable[[], None]) -> None:
    """A cache that cannot be written (read-only home, full disk) only costs speed."""
    with contextlib.suppress(OSError):
        write()


def find_named(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder of a downloaded or imported data set, or None."""
    if not _NAME.match(name):
        return None
    folder = cache_mod.datasets_dir(data_dir) / name
    return folder if is_complete(folder) else None


def load_dataset(
    path_or_name,
    data_dir=None,
    *,
    items=None,
    users=None,
    cache: bool = True,
    name: str | None = None,
) -> Dataset:
    """A path (folder or interactions file) or a data set name from the data folder."""
    opts = LoadOptions(
        items=Path(items) if items is not None else None,
        users=Path(users) if users is not None else None,
        cache=cache,
        data_dir=Path(data_dir) if data_dir is not None else None,
        name=name,
    )
    path = Path(path_or_name)
    if path.exists():
        return load_path(path, opts)
    named = find_named(str(path_or_name), data_dir)
    if named is not None:
        if opts.name is None:
            opts = replace(opts, name=str(path_or_name))
        return load_path(named, opts)
    if str(path_or_name) in known_archives():
        raise DataError(
            f"{path_or_name}: not in the data folder {cache_mod.datasets_dir(data_dir)} yet; "
            f"run `bstrec data download {path_or_name}`, or `bstrec data import PATH` "
            "with a zip or folder you fetched by hand"
        )
    raise DataError(f"{path_or_name}: no such file or folder, and not a known data set name")
