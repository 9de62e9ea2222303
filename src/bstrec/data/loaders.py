"""``load_dataset``: find the format of a folder or file and read it into a Dataset."""

from __future__ import annotations

from pathlib import Path

from bstrec.data.interactions import DataError, Dataset, build_dataset
from bstrec.data.readers import (
    check_known_items,
    read_ml1m_movies,
    read_ml1m_ratings,
    read_ml1m_users,
)


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "ratings.dat").is_file():
            return "ml-1m"
        if (path / "u.data").is_file():
            return "ml-100k"
        if (path / "ratings.csv").is_file():
            return "ml-csv"
        raise DataError(
            f"{path}: no MovieLens files found (expected ratings.dat, u.data or ratings.csv)"
        )
    if path.is_file():
        if path.suffix.lower() in (".csv", ".parquet", ".tsv"):
            return "interactions"
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .parquet)")
    raise DataError(f"{path}: no such file or folder")


def load_ml1m(folder: Path, name: str | None = None) -> Dataset:
    """ML-1M (and ML-10M) `::` files: ratings.dat, movies.dat, users.dat (optional)."""
    ratings_path = folder / "ratings.dat"
    movies_path = folder / "movies.dat"
    users_path = folder / "users.dat"
    cols, r_md5 = read_ml1m_ratings(ratings_path)
    items, m_md5 = read_ml1m_movies(movies_path)
    check_known_items(cols["item"], items, ratings_path, movies_path)
    sources = {"ratings.dat": r_md5, "movies.dat": m_md5}
    users = None
    if users_path.is_file():
        users, u_md5 = read_ml1m_users(users_path)
        sources["users.dat"] = u_md5
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


def load_path(path: Path) -> Dataset:
    fmt = detect_format(path)
    if fmt == "ml-1m":
        return load_ml1m(path)
    raise DataError(f"{path}: format {fmt} is not supported yet")


def load_dataset(path_or_name, data_dir=None) -> Dataset:
    """A path (folder or interactions file) or a known data set name from the cache."""
    path = Path(path_or_name)
    if path.exists():
        return load_path(path)
    raise DataError(f"{path_or_name}: no such file or folder, and not a known data set name")
