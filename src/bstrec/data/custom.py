"""A user's own interaction files: CSV, TSV or parquet, with optional feature files.

Interactions need columns ``user``, ``item`` and ``timestamp`` (seconds since 1970, or
ISO dates), and may have ``rating`` (0.5 to 5 stars; empty = no rating). Common
spellings are accepted (``user_id``, ``userId``, ``movieId``, ``time`` ...), matched
without regard to case.

An items file (``--items``) has an ``item`` column and optionally ``title``,
``genres`` (``Action|Comedy``) and ``year`` (else parsed from a title like
``Heat (1995)``). A users file (``--users``) has a ``user`` column; every other column
becomes a categorical user feature (an integer ``age`` column is put into the ML-1M age
groups). Ids may be numbers or strings; they are matched as strings when either
side is not all integers.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from bstrec.data.interactions import (
    UNKNOWN,
    DataError,
    Dataset,
    ItemTable,
    UserTable,
    build_dataset,
)
from bstrec.data.readers import (
    RATING_RANGE,
    _check_unique,
    _multi_hot,
    age_group,
    line_of_row,
    md5_bytes,
    parse_years,
    read_bytes,
)

ALIASES = {
    "user": ("user", "user_id", "userid", "uid", "person"),
    "item": ("item", "item_id", "itemid", "movie", "movie_id", "movieid", "iid"),
    "timestamp": ("timestamp", "time", "ts", "datetime", "date"),
    "rating": ("rating", "stars", "score"),
    "title": ("title", "name"),
    "genres": ("genres", "genre"),
    "year": ("year", "release_year"),
}
SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


@dataclass
class TableFile:
    """A parsed table and what error messages need to point into it."""

    path: Path
    table: pa.Table
    raw: bytes
    is_text: bool

    def where(self, row: int) -> str:
        if self.is_text:
            return f"{self.path}:{line_of_row(self.raw, row, skip_header=True)}"
        return f"{self.path}: row {row + 1}"

    def column(self, role: str, required: bool = True, aliases: tuple[str, ...] = ()):
        names = aliases or ALIASES[role]
        by_lower = {c.lower(): c for c in self.table.column_names}
        for a in names:
            if a in by_lower:
                return by_lower[a]
        if required:
            head = f"{self.path}:1" if self.is_text else str(self.path)
            raise DataError(
                f"{head}: no '{role}' column (looked for {', '.join(names)}); "
                f"found {', '.join(self.table.column_names) or 'none'}"
            )
        return None


def read_table(path: Path) -> TableFile:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .csv, .tsv, .parquet)")
    raw = read_bytes(path)
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(raw))
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{path}: not a readable parquet file ({e})") from None
        return TableFile(path, table, raw, is_text=False)
    if raw.find(b"\x00", 0, 1 << 16) >= 0:
        raise DataError(f"{path}:1: contains NUL bytes; wrong encoding (UTF-16?)")
    delimiter = "\t" if suffix == ".tsv" else ","
    try:
        table = pacsv.read_csv(
            io.BytesIO(raw),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        _find_bad_csv_line(raw, path, delimiter)
        raise DataError(f"{path}: malformed CSV ({e})") from None
    return TableFile(path, table, raw, is_text=True)


def _find_bad_csv_line(raw: bytes, path: Path, delimiter: str) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid utf-8 text (byte {raw[e.start]:#04x}); wrong encoding?"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, [])
    try:
        for row in reader:
            if row and len(row) != len(header):
                raise DataError(
                    f"{path}:{reader.line_num}: expected {len(header)} fields "
                    f"({delimiter.join(header)}), found {len(row)}"
                )
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV: {e}") from None


# ---------------------------------------------------------------- column conversions
def _first_null(col: pa.ChunkedArray) -> int | None:
    if col.null_count == 0:
        return None
    return int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])


def ids_column(tf: TableFile, name: str, field: str) -> np.ndarray:
    col = tf.table.column(name)
    row = _first_null(col)
    if row is not None:
        raise DataError(f"{tf.where(row)}: field '{field}' is empty")
    if pa.types.is_integer(col.type):
        return col.to_numpy().astype(np.int64)
    if pa.types.is_floating(col.type):
        v = col.to_numpy()
        if np.all(v == np.floor(v)):
            return v.astype(np.int64)
    values = np.asarray(col.cast(pa.string()).to_pylist(), dtype=str)
    empty = np.flatnonzero(np.char.str_len(values) == 0) if len(values) else []
    if len(empty):
        raise DataError(f"{tf.where(int(empty[0]))}: field '{field}' is empty")
    return values


def timestamp_column(tf: TableFile, name: str) -> np.ndarray:
    col = tf.table.column(name)
    row = _first_null(col)
    if row is not None:
        raise DataError(f"{tf.where(row)}: field 'timestamp' is empty")
    t = col.type
    if pa.types.is_integer(t):
        return col.to_numpy().astype(np.int64)
    if pa.types.is_floating(t):
        return np.floor(col.to_numpy()).astype(np.int64)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64()).to_numpy()
    values = col.cast(pa.string()).to_pylist()
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        try:
            out[i] = int(v)
        except ValueError:
            try:
                out[i] = int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp())
            except ValueError:
                raise DataError(
                    f"{tf.where(i)}: field 'timestamp' is neither seconds since 1970 nor "
                    f"an ISO date: {v!r}"
                ) from None
    return out


def rating_column(tf: TableFile, name: str) -> np.ndarray:
    col = tf.table.column(name)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
            or pa.types.is_null(col.type)):  # fmt: skip
        for i, v in enumerate(col.cast(pa.string()).to_pylist()):
            try:
                float(v) if v is not None else None
            except ValueError:
                raise DataError(f"{tf.where(i)}: field 'rating' is not a number: {v!r}") from None
        col = pc.cast(col, pa.float64())
    r = col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float32)
    lo, hi = RATING_RANGE
    bad = np.flatnonzero(~np.isnan(r) & ((r < lo) | (r > hi)))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{tf.where(i)}: field 'rating' is outside {lo:g}..{hi:g} (value {r[i]:g})")
    return r


def _match_id_types(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return a.astype(np.int64), b.astype(np.int64)
    return a.astype(str), b.astype(str)


# ---------------------------------------------------------------- feature files
def read_items(path: Path) -> tuple[TableFile, np.ndarray, ItemTable]:
    tf = read_table(path)
    ids = ids_column(tf, tf.column("item", aliases=(*ALIASES["item"], "id")), "item")
    n = len(ids)
    title_col = tf.column("title", required=False)
    if title_col is not None:
        titles = [t if t is not None else "" for t in tf.table.column(title_col).to_pylist()]
    else:
        titles = [str(i) for i in ids.tolist()]
    year_col = tf.column("year", required=False)
    if year_col is not None:
        col = tf.table.column(year_col).cast(pa.float64())
        years = np.nan_to_num(col.to_numpy(zero_copy_only=False), nan=0).astype(np.int32)
    else:
        years = parse_years(titles)
    genre_col = tf.column("genres", required=False)
    if genre_col is not None:
        strings = [g or "" for g in tf.table.column(genre_col).cast(pa.string()).to_pylist()]
        genres = _multi_hot([s.replace("(no genres listed)", "") for s in strings], [])
    else:
        genres = {"genres": np.zeros((n, 0), dtype=bool), "genre_names": []}
    _check_unique(ids, path, "item", tf.raw.decode("latin-1") if tf.is_text else None,
                  skip_header=True)  # fmt: skip
    table = ItemTable(
        ids=ids,
        titles=np.asarray(titles, dtype=object).astype(str).reshape(n),
        years=years,
        **genres,
    )
    return tf, ids, table


def read_users(path: Path) -> tuple[TableFile, UserTable]:
    tf = read_table(path)
    ucol = tf.column("user")
    ids = ids_column(tf, ucol, "user")
    features = {}
    for c in tf.table.column_names:
        if c == ucol:
            continue
        col = tf.table.column(c)
        values = col.to_pylist()
        if c.lower() == "age" and pa.types.is_integer(col.type):
            values = [age_group(v) if v is not None else None for v in values]
        known = [v is not None and str(v) != "" for v in values]
        strs = np.asarray([str(v) if k else "" for v, k in zip(values, known, strict=True)])
        vocab = sorted({s for s, k in zip(strs.tolist(), known, strict=True) if k})
        lookup = {s: i + 1 for i, s in enumerate(vocab)}
        pairs = zip(strs.tolist(), known, strict=True)
        codes = np.asarray([lookup.get(s, 0) if k else 0 for s, k in pairs], dtype=np.int32)
        features[c] = (codes, [UNKNOWN, *vocab])
    _check_unique(ids, path, "user", tf.raw.decode("latin-1") if tf.is_text else None,
                  skip_header=True)  # fmt: skip
    return tf, UserTable(ids=ids, features=features)


# ---------------------------------------------------------------- the loader
def load_interactions(
    path: Path, items: Path | None = None, users: Path | None = None, name: str | None = None
) -> Dataset:
    tf = read_table(path)
    user = ids_column(tf, tf.column("user"), "user")
    item = ids_column(tf, tf.column("item"), "item")
    ts = timestamp_column(tf, tf.column("timestamp"))
    rcol = tf.column("rating", required=False)
    rating = rating_column(tf, rcol) if rcol else np.full(len(user), np.nan, dtype=np.float32)
    sources = {"interactions": md5_bytes(tf.raw)}

    if items is not None:
        items_tf, item_ids, item_table = read_items(items)
        item, item_table.ids = _match_id_types(item, item_ids)
        known = item_table.contains(item)
        if not known.all():
            row = int(np.flatnonzero(~known)[0])
            raise DataError(
                f"{tf.where(row)}: field 'item' {item[row].item()!r} is not listed in {items}"
            )
        sources["items"] = md5_bytes(items_tf.raw)
    else:
        item_table = ItemTable.placeholder(item)

    user_table = None
    if users is not None:
        users_tf, user_table = read_users(users)
        user, user_table.ids = _match_id_types(user, user_table.ids)
        sources["users"] = md5_bytes(users_tf.raw)

    if len(user) == 0:
        raise DataError(f"{path}: no interactions")
    return build_dataset(name or path.stem, user, item, rating, ts, item_table, user_table, sources)
