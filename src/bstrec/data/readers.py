"""Readers for the MovieLens file formats.

The fast path hands whole files to pyarrow's multi-threaded CSV parser; only when it
rejects a file, or a value is out of range, do we walk the lines in Python to name the
exact line and field. A 1M-line ratings file therefore parses in tens of milliseconds,
and bad input still gets a precise message.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from bstrec.data.interactions import (
    DataError,
    ItemTable,
    UserTable,
    encode_categorical,
)

ML1M_GENRES = [
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]  # fmt: skip

# ML-1M codes its demographics; these vocabularies are the README's own labels.
ML1M_AGES = {"1": "Under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49",
             "50": "50-55", "56": "56+"}  # fmt: skip

_YEAR = re.compile(r"\((\d{4})\)\s*$")


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path.read_bytes()


def decode(data: bytes, path: Path, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid {encoding} text (byte {data[e.start]:#04x}); "
            "wrong encoding?"
        ) from None


def parse_year(title: str) -> int:
    m = _YEAR.search(title)
    return int(m.group(1)) if m else 0


# ---------------------------------------------------------------- generic int tables
def parse_int_table(
    data: bytes,
    path: Path,
    sep: bytes,
    names: list[str],
    *,
    skip_header: bool = False,
    float_cols: tuple[str, ...] = (),
    optional_cols: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Parse a table whose fields are all numbers, e.g. ``1::1193::5::978300760``.

    ``optional_cols`` may be absent from the file (they come back missing from the dict).
    """
    if b"\x00" in data[:4096]:
        raise DataError(f"{path}:1: contains NUL bytes; wrong encoding (UTF-16?)")
    if len(sep) > 1:
        if b"\t" in data:
            _slow_validate(data, path, sep, names, float_cols, optional_cols, skip_header)
        data = data.replace(sep, b"\t")
        sep = b"\t"
    ncols = _count_fields(data, sep, skip_header)
    if ncols not in (len(names), len(names) - len(optional_cols)):
        _slow_validate(data, path, sep, names, float_cols, optional_cols, skip_header)
    cols = names[:ncols]
    types = {c: (pa.float64() if c in float_cols else pa.int64()) for c in cols}
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(
                column_names=cols, skip_rows=1 if skip_header else 0, block_size=1 << 22
            ),
            parse_options=pacsv.ParseOptions(delimiter=sep.decode(), quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        _slow_validate(data, path, sep, names, float_cols, optional_cols, skip_header)
        raise  # the slow pass found nothing: let the parser's own message through
    out = {}
    for c in cols:
        col = table.column(c)
        if col.null_count:
            _slow_validate(data, path, sep, names, float_cols, optional_cols, skip_header)
        out[c] = col.to_numpy()
    return out


def _count_fields(data: bytes, sep: bytes, skip_header: bool) -> int:
    lines = data.split(b"\n", 2)
    first = lines[1] if skip_header and len(lines) > 1 else lines[0]
    return first.rstrip(b"\r").count(sep) + 1


def _slow_validate(data, path, sep, names, float_cols, optional_cols, skip_header) -> None:
    """Walk the lines to raise a DataError naming the first bad line and field."""
    text = data.decode("latin-1")
    allowed = {len(names), len(names) - len(optional_cols)}
    s = sep.decode()
    for lineno, line in enumerate(text.split("\n"), start=1):
        if skip_header and lineno == 1:
            continue
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split(s)
        if len(parts) not in allowed:
            raise DataError(
                f"{path}:{lineno}: expected {len(names)} fields separated by {s!r}, "
                f"found {len(parts)}: {line[:80]!r}"
            )
        for name, value in zip(names, parts, strict=False):
            try:
                float(value) if name in float_cols else int(value)
            except ValueError:
                raise DataError(
                    f"{path}:{lineno}: field '{name}' is not a number: {value!r}"
                ) from None


def line_of_row(data: bytes, row: int, skip_header: bool = False) -> int:
    """1-based line number of the ``row``-th non-empty data row (for range errors)."""
    seen = -1
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        if skip_header and lineno == 1:
            continue
        if line.strip():
            seen += 1
            if seen == row:
                return lineno
    return -1


def check_range(
    values: np.ndarray,
    ok: np.ndarray,
    data: bytes,
    path: Path,
    field: str,
    what: str | Callable[[object], str],
    skip_header: bool = False,
) -> None:
    """Raise a DataError naming the first row where ``ok`` is False."""
    if ok.all():
        return
    row = int(np.flatnonzero(~ok)[0])
    v = values[row].item() if hasattr(values[row], "item") else values[row]
    msg = what(v) if callable(what) else what
    raise DataError(
        f"{path}:{line_of_row(data, row, skip_header)}: field '{field}' {msg} (value {v!r})"
    )


# ---------------------------------------------------------------- MovieLens 1M / 10M
def read_ml1m_ratings(path: Path) -> tuple[dict[str, np.ndarray], str]:
    data = read_bytes(path)
    cols = parse_int_table(
        data, path, b"::", ["user", "item", "rating", "timestamp"], float_cols=("rating",)
    )
    r = cols["rating"]
    check_range(r, (r >= 0.5) & (r <= 5), data, path, "rating", "is outside 0.5..5")
    return cols, md5_bytes(data)


def read_ml1m_movies(path: Path) -> tuple[ItemTable, str]:
    data = read_bytes(path)
    text = decode(data, path, "latin-1")
    ids, titles, years, genres = [], [], [], []
    gindex = {g: i for i, g in enumerate(ML1M_GENRES)}
    names = list(ML1M_GENRES)
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        parts = line.split("::")
        if len(parts) != 3:
            raise DataError(f"{path}:{lineno}: expected 3 fields 'id::title::genres': {line!r}")
        try:
            mid = int(parts[0])
        except ValueError:
            raise DataError(f"{path}:{lineno}: field 'movie id' is not a number") from None
        row = []
        for g in filter(None, parts[2].split("|")):
            if g not in gindex:  # tolerate new genres (ML-10M adds IMAX) rather than fail
                gindex[g] = len(names)
                names.append(g)
            row.append(gindex[g])
        ids.append(mid)
        titles.append(parts[1])
        years.append(parse_year(parts[1]))
        genres.append(row)
    multi = np.zeros((len(ids), len(names)), dtype=bool)
    for r, gs in enumerate(genres):
        multi[r, gs] = True
    table = ItemTable(
        ids=np.asarray(ids, dtype=np.int64),
        titles=np.asarray(titles, dtype=object).astype(str),
        years=np.asarray(years, dtype=np.int32),
        genres=multi,
        genre_names=names,
    )
    _check_unique(table.ids, path, "movie id")
    return table, md5_bytes(data)


def read_ml1m_users(path: Path) -> tuple[UserTable, str]:
    data = read_bytes(path)
    text = decode(data, path, "latin-1")
    ids, gender, age, occ, zips = [], [], [], [], []
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        parts = line.split("::")
        if len(parts) != 5:
            raise DataError(
                f"{path}:{lineno}: expected 5 fields 'id::gender::age::occupation::zip'"
            )
        try:
            ids.append(int(parts[0]))
        except ValueError:
            raise DataError(f"{path}:{lineno}: field 'user id' is not a number") from None
        if parts[1] not in ("M", "F"):
            raise DataError(f"{path}:{lineno}: field 'gender' must be M or F: {parts[1]!r}")
        if parts[2] not in ML1M_AGES:
            raise DataError(f"{path}:{lineno}: field 'age' is not an ML-1M age code: {parts[2]!r}")
        gender.append(parts[1])
        age.append(ML1M_AGES[parts[2]])
        occ.append(parts[3])
        zips.append(parts[4][:1])
    uids = np.asarray(ids, dtype=np.int64)
    _check_unique(uids, path, "user id")
    return (
        UserTable(
            ids=uids,
            features={
                "gender": encode_categorical(np.asarray(gender)),
                "age": encode_categorical(np.asarray(age)),
                "occupation": encode_categorical(np.asarray(occ)),
                "zip1": encode_categorical(np.asarray(zips)),
            },
        ),
        md5_bytes(data),
    )


def _check_unique(ids: np.ndarray, path: Path, field: str) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{path}: field '{field}' {uniq[counts > 1][0]} appears more than once")


def check_known_items(
    raw_item: np.ndarray, table: ItemTable, data_path: Path, item_file: Path,
    skip_header: bool = False,
) -> None:
    """Every rated movie must be listed in the item file; name the first line that is not."""
    ok = table.contains(raw_item)
    if ok.all():
        return
    row = int(np.flatnonzero(~ok)[0])
    line = line_of_row(read_bytes(data_path), row, skip_header)
    raise DataError(
        f"{data_path}:{line}: field 'movie id' {raw_item[row]} is not listed in {item_file}"
    )
