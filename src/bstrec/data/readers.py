"""Readers for the MovieLens file formats and for a user's own interaction files.

The fast path hands whole files to pyarrow's multi-threaded CSV parser; only when it
rejects a file, or a value is out of range, do we walk the lines in Python to name the
exact line and field. A 1M-line ratings file therefore parses in tens of milliseconds,
and bad input still gets a precise message.
"""

from __future__ import annotations

import csv
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

# ML-100K's u.item flags, in file order. Its first flag, "unknown", is dropped so that
# both releases share ML-1M's 18-genre vocabulary (an all-zero row means "unknown").
ML100K_GENRES = ["unknown", *ML1M_GENRES]

# The CSV releases mark a movie without genres this way rather than leaving it empty.
NO_GENRES = "(no genres listed)"

RATING_RANGE = (0.5, 5.0)

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
            f"{path}:{line}: not valid {encoding} text (byte {data[e.start]:#04x}); wrong encoding?"
        ) from None


def decode_text(data: bytes, path: Path, encoding: str) -> str:
    """Decode a text file, refusing UTF-16 and accepting UTF-8 where latin-1 is expected.

    A latin-1 decode never fails, so a file re-saved as UTF-16 would silently become
    garbage; a file re-saved as UTF-8 is valid UTF-8 and its multi-byte sequences are
    practically never genuine latin-1 text, so reading it as UTF-8 is the right guess.
    """
    _refuse_utf16(data, path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if encoding == "latin-1" and not data.isascii():
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return decode(data, path, encoding)


def _refuse_utf16(data: bytes, path: Path) -> None:
    nul = data.find(b"\x00", 0, 1 << 16)
    if nul >= 0 or data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        line = data[: max(nul, 0)].count(b"\n") + 1
        raise DataError(f"{path}:{line}: contains NUL bytes; wrong encoding (UTF-16?)")


def parse_year(title: str) -> int:
    m = _YEAR.search(title)
    return int(m.group(1)) if m else 0


def parse_years(titles: list[str]) -> np.ndarray:
    """Release years from titles like 'Heat (1995)', 0 where there is none.

    Slicing the common shape first is 3x faster than a regex per title.
    """
    out = []
    for t in titles:
        y = t[-5:-1]
        if t[-1:] == ")" and t[-6:-5] == "(" and y.isdigit():
            out.append(int(y))
        else:
            out.append(parse_year(t))
    return np.asarray(out, dtype=np.int32)


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
    _refuse_utf16(data, path)
    ncols = _count_fields(data, sep, skip_header)
    if ncols not in (len(names), len(names) - len(optional_cols)):
        _slow_validate(data, path, sep, names, float_cols, optional_cols, skip_header)
    cols = names[:ncols]
    types = {c: (pa.float64() if c in float_cols else pa.int64()) for c in cols}
    delimiter = sep[:1].decode()
    if len(sep) > 1 and sep == sep[:1] * len(sep):
        # "::" parses as ':' with empty columns in between, typed null so that anything
        # in them is an error; this skips a 30 ms copy of the whole file via replace().
        gaps = len(sep) - 1
        parsed = []
        for i, c in enumerate(cols):
            parsed.append(c)
            if i < len(cols) - 1:
                for g in range(gaps):
                    gap = f"_gap{i}_{g}"
                    parsed.append(gap)
                    types[gap] = pa.null()
    elif len(sep) > 1:
        raise ValueError(f"unsupported separator {sep!r}")
    else:
        parsed = cols
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(
                column_names=parsed, skip_rows=1 if skip_header else 0, block_size=1 << 22
            ),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types=types, strings_can_be_null=False, include_columns=cols
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        _slow_validate(data, path, sep, names, float_cols, optional_cols, skip_header)
        raise  # the slow pass found nothing: let the parser's own message through
    out = {}
    for c in cols:
        col = table.column(c)
        if col.null_count:
            _slow_validate(data, path, sep, names, float_cols, optional_cols, skip_header)
        out[c] = arrow_to_numpy(col)
    return out


_NUMPY_OF_ARROW = {pa.int64(): np.int64, pa.int32(): np.int32, pa.float64(): np.float64,
                   pa.float32(): np.float32}  # fmt: skip


def arrow_to_numpy(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numeric column as numpy without pyarrow's to_numpy, which imports pandas
    (a quarter of a second, more than parsing ML-1M takes)."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    dtype = _NUMPY_OF_ARROW.get(col.type)
    if dtype is None or col.null_count:
        return col.to_numpy() if isinstance(col, pa.ChunkedArray) else col.to_numpy(False)
    size = np.dtype(dtype).itemsize
    parts = [
        np.frombuffer(c.buffers()[1], dtype=dtype, count=len(c), offset=c.offset * size)
        for c in chunks
    ]
    if not parts:
        return np.zeros(0, dtype=dtype)
    return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)


def _count_fields(data: bytes, sep: bytes, skip_header: bool) -> int:
    start = data.index(b"\n") + 1 if skip_header and b"\n" in data else 0
    end = data.find(b"\n", start)
    first = data[start : end if end >= 0 else len(data)]
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


def check_ratings(r: np.ndarray, data: bytes, path: Path, skip_header: bool = False) -> None:
    lo, hi = RATING_RANGE
    # written so that NaN fails too
    ok = (r >= lo) & (r <= hi)
    check_range(r, ok, data, path, "rating", f"is outside {lo:g}..{hi:g}", skip_header)


# ---------------------------------------------------------------- MovieLens 1M / 10M
def read_ml1m_ratings(path: Path) -> tuple[dict[str, np.ndarray], str]:
    return _read_separated_ratings(path, b"::")


def _read_separated_ratings(path: Path, sep: bytes) -> tuple[dict[str, np.ndarray], str]:
    """user, item, rating, timestamp per line, no header (ML-1M/10M and ML-100K)."""
    data = read_bytes(path)
    cols = parse_int_table(
        data, path, sep, ["user", "item", "rating", "timestamp"], float_cols=("rating",)
    )
    check_ratings(cols["rating"], data, path)
    return cols, md5_bytes(data)


_ML1M_MOVIE = re.compile(r"^(\d+)::(.*)::([^:\r\n]*)\r?$", re.M)
_ML1M_USER = re.compile(r"^(\d+)::([^:\r\n]*)::([^:\r\n]*)::([^:\r\n]*)::([^:\r\n]*)\r?$", re.M)


def read_ml1m_movies(path: Path) -> tuple[ItemTable, str]:
    data = read_bytes(path)
    text = decode_text(data, path, "latin-1")
    rows = _ML1M_MOVIE.findall(text)
    if len(rows) != _count_nonblank(text):
        _ml1m_movies_slow(text, path)  # raises on the first line the pattern rejected
    ids = np.asarray([r[0] for r in rows], dtype=np.int64)
    titles = [r[1] for r in rows]
    table = ItemTable(
        ids=ids,
        titles=np.asarray(titles, dtype=object).astype(str),
        years=parse_years(titles),
        **_multi_hot([r[2] for r in rows], list(ML1M_GENRES)),
    )
    _check_unique(table.ids, path, "movie id", text)
    return table, md5_bytes(data)


def _ml1m_movies_slow(text: str, path: Path) -> None:
    for lineno, line in _lines(text):
        parts = line.split("::")
        if len(parts) != 3:
            raise DataError(f"{path}:{lineno}: expected 3 fields 'id::title::genres': {line!r}")
        if not parts[0].isdigit():
            raise DataError(f"{path}:{lineno}: field 'movie id' is not a number: {parts[0]!r}")
    raise DataError(f"{path}: could not parse (unexpected layout)")


def read_ml1m_users(path: Path) -> tuple[UserTable, str]:
    data = read_bytes(path)
    text = decode_text(data, path, "latin-1")
    rows = _ML1M_USER.findall(text)
    if len(rows) != _count_nonblank(text):
        _ml1m_users_slow(text, path)
    ids, gender, age, occ, zips = (
        (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [], [])
    )
    bad_gender = [i for i, g in enumerate(gender) if g not in ("M", "F")]
    bad_age = [i for i, a in enumerate(age) if a not in ML1M_AGES]
    if bad_gender or bad_age:
        _ml1m_users_slow(text, path)
    uids = np.asarray(ids, dtype=np.int64)
    _check_unique(uids, path, "user id", text)
    return (
        UserTable(
            ids=uids,
            features={
                "gender": encode_categorical(np.asarray(gender)),
                "age": encode_categorical(np.asarray([ML1M_AGES[a] for a in age])),
                "occupation": encode_categorical(np.asarray(occ)),
                "zip1": encode_categorical(np.asarray([z[:1] for z in zips])),
            },
        ),
        md5_bytes(data),
    )


def _ml1m_users_slow(text: str, path: Path) -> None:
    for lineno, line in _lines(text):
        parts = line.split("::")
        if len(parts) != 5:
            raise DataError(
                f"{path}:{lineno}: expected 5 fields 'id::gender::age::occupation::zip'"
            )
        if not parts[0].isdigit():
            raise DataError(f"{path}:{lineno}: field 'user id' is not a number: {parts[0]!r}")
        if parts[1] not in ("M", "F"):
            raise DataError(f"{path}:{lineno}: field 'gender' must be M or F: {parts[1]!r}")
        if parts[2] not in ML1M_AGES:
            raise DataError(f"{path}:{lineno}: field 'age' is not an ML-1M age code: {parts[2]!r}")
    raise DataError(f"{path}: could not parse (unexpected layout)")


# ---------------------------------------------------------------- MovieLens 100K
def read_ml100k_ratings(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """``u.data``: user, item, rating, timestamp separated by tabs."""
    return _read_separated_ratings(path, b"\t")


def read_ml100k_items(path: Path) -> tuple[ItemTable, str]:
    """``u.item``: id|title|release date|video date|IMDb URL|19 genre flags (latin-1)."""
    data = read_bytes(path)
    text = decode_text(data, path, "latin-1")
    nflags = len(ML100K_GENRES)
    ids, titles, years, flags = [], [], [], []
    for lineno, line in _lines(text):
        parts = line.split("|")
        if len(parts) != 5 + nflags:
            raise DataError(
                f"{path}:{lineno}: expected {5 + nflags} fields separated by '|' "
                f"(id|title|release date|video release date|URL|{nflags} genre flags), "
                f"found {len(parts)}"
            )
        if not parts[0].isdigit():
            raise DataError(f"{path}:{lineno}: field 'movie id' is not a number: {parts[0]!r}")
        row = parts[5:]
        if any(f not in ("0", "1") for f in row):
            bad = next(i for i, f in enumerate(row) if f not in ("0", "1"))
            raise DataError(
                f"{path}:{lineno}: field 'genre {ML100K_GENRES[bad]}' must be 0 or 1: {row[bad]!r}"
            )
        ids.append(int(parts[0]))
        titles.append(parts[1])
        years.append(_release_year(parts[2], parts[1], path, lineno))
        flags.append([f == "1" for f in row[1:]])  # drop "unknown"
    table = ItemTable(
        ids=np.asarray(ids, dtype=np.int64),
        titles=np.asarray(titles, dtype=object).astype(str),
        years=np.asarray(years, dtype=np.int32),
        genres=np.asarray(flags, dtype=bool).reshape(len(ids), nflags - 1),
        genre_names=list(ML1M_GENRES),
    )
    _check_unique(table.ids, path, "movie id", text)
    return table, md5_bytes(data)


def _release_year(date: str, title: str, path: Path, lineno: int) -> int:
    """The year in the title, 'Heat (1995)', as the ML-1M reader reads it; without one,
    the release date's ('01-Jan-1995' -> 1995); else 0.

    The date column need not be the film's first release (it can be a later release's),
    so both releases get their year from the same place, the title. The date is still
    checked, so a malformed one is named.
    """
    date = date.strip()
    year = date.rsplit("-", 1)[-1]
    if date and not (len(year) == 4 and year.isdigit()):
        raise DataError(f"{path}:{lineno}: field 'release date' is not like 01-Jan-1995: {date!r}")
    return parse_year(title) or (int(year) if date else 0)


def age_group(age: int) -> str:
    """A person's age in years -> the ML-1M age group label, so both releases agree."""
    for lo, label in ((56, "56+"), (50, "50-55"), (45, "45-49"), (35, "35-44"), (25, "25-34"),
                      (18, "18-24")):  # fmt: skip
        if age >= lo:
            return label
    return "Under 18"


def read_ml100k_users(path: Path) -> tuple[UserTable, str]:
    """``u.user``: id|age|gender|occupation|zip code."""
    data = read_bytes(path)
    text = decode_text(data, path, "latin-1")
    ids, gender, age, occ, zips = [], [], [], [], []
    for lineno, line in _lines(text):
        parts = line.split("|")
        if len(parts) != 5:
            raise DataError(
                f"{path}:{lineno}: expected 5 fields 'id|age|gender|occupation|zip', "
                f"found {len(parts)}"
            )
        if not parts[0].isdigit():
            raise DataError(f"{path}:{lineno}: field 'user id' is not a number: {parts[0]!r}")
        if not parts[1].isdigit() or not 0 < int(parts[1]) < 130:
            raise DataError(f"{path}:{lineno}: field 'age' is not an age in years: {parts[1]!r}")
        if parts[2] not in ("M", "F"):
            raise DataError(f"{path}:{lineno}: field 'gender' must be M or F: {parts[2]!r}")
        ids.append(int(parts[0]))
        age.append(age_group(int(parts[1])))
        gender.append(parts[2])
        occ.append(parts[3])
        zips.append(parts[4][:1])
    uids = np.asarray(ids, dtype=np.int64)
    _check_unique(uids, path, "user id", text)
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


# ---------------------------------------------------------------- CSV releases (20M+)
CSV_RATINGS_HEADER = ["userId", "movieId", "rating", "timestamp"]
CSV_MOVIES_HEADER = ["movieId", "title", "genres"]


def read_csv_ratings(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """``ratings.csv`` of ml-20m, ml-25m, ml-32m, ml-latest(-small)."""
    data = read_bytes(path)
    _check_header(data, path, CSV_RATINGS_HEADER)
    cols = parse_int_table(
        data,
        path,
        b",",
        ["user", "item", "rating", "timestamp"],
        skip_header=True,
        float_cols=("rating",),
    )
    check_ratings(cols["rating"], data, path, skip_header=True)
    return cols, md5_bytes(data)


def read_csv_movies(path: Path) -> tuple[ItemTable, str]:
    """``movies.csv``: movieId,title,genres with quoted titles, genres split by '|'."""
    data = read_bytes(path)
    text = decode_text(data, path, "utf-8")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header != CSV_MOVIES_HEADER:
        raise DataError(
            f"{path}:1: expected header {','.join(CSV_MOVIES_HEADER)!r}, found {header!r}"
        )
    ids, titles, genres = [], [], []
    try:
        for row in reader:
            if not row:
                continue
            if len(row) != 3:
                raise DataError(
                    f"{path}:{reader.line_num}: expected 3 fields movieId,title,genres, "
                    f"found {len(row)}"
                )
            if not row[0].isdigit():
                raise DataError(
                    f"{path}:{reader.line_num}: field 'movieId' is not a number: {row[0]!r}"
                )
            ids.append(int(row[0]))
            titles.append(row[1].strip())
            genres.append(_csv_genres(row[2]))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV: {e}") from None
    table = ItemTable(
        ids=np.asarray(ids, dtype=np.int64),
        titles=np.asarray(titles, dtype=object).astype(str),
        years=parse_years(titles),
        **_multi_hot(genres, list(ML1M_GENRES)),
    )
    _check_unique(table.ids, path, "movieId", text, skip_header=True)
    return table, md5_bytes(data)


def _csv_genres(s: str) -> str:
    # The CSV releases spell ML-1M's "Children's" as "Children": one genre, one name.
    if s == NO_GENRES:
        return ""
    return "|".join("Children's" if g == "Children" else g for g in s.split("|"))


def _check_header(data: bytes, path: Path, expected: list[str]) -> None:
    _refuse_utf16(data, path)
    end = data.find(b"\n")
    first = data[: end if end >= 0 else len(data)].rstrip(b"\r").lstrip(b"\xef\xbb\xbf")
    found = first.decode("latin-1").split(",")
    if found != expected:
        raise DataError(f"{path}:1: expected header {','.join(expected)!r}, found {found!r}")


# ---------------------------------------------------------------- shared helpers
def _lines(text: str):
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line:
            yield lineno, line


def _count_nonblank(text: str) -> int:
    n = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    if "\n\n" in text or "\n\r\n" in text or text.startswith(("\n", "\r\n")):
        n = sum(1 for line in text.split("\n") if line.rstrip("\r"))
    return n


def _multi_hot(genre_strings: list[str], names: list[str]) -> dict:
    """'Action|Comedy' strings -> {'genres': (n, G) bool, 'genre_names': names}.

    Genres beyond ``names`` are appended rather than refused (ML-10M adds IMAX). Each
    distinct string is split once: there are a few hundred of them for 87k movies.
    """
    gindex = {g: i for i, g in enumerate(names)}
    distinct, inverse = np.unique(np.asarray(genre_strings, dtype=str), return_inverse=True)
    rows = []
    for s in distinct.tolist():
        row = []
        for g in filter(None, s.split("|")):
            if g not in gindex:
                gindex[g] = len(names)
                names.append(g)
            row.append(gindex[g])
        rows.append(row)
    per_distinct = np.zeros((len(distinct), len(names)), dtype=bool)
    for r, gs in enumerate(rows):
        per_distinct[r, gs] = True
    genres = per_distinct[inverse.reshape(-1)] if len(genre_strings) else per_distinct[:0]
    return {"genres": genres, "genre_names": names}


def _check_unique(
    ids: np.ndarray, path: Path, field: str, text: str | None = None, skip_header: bool = False
) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if not (counts > 1).any():
        return
    dup = uniq[counts > 1][0]
    rows = np.flatnonzero(ids == dup)
    where = ""
    if text is not None:
        second = line_of_row(text.encode("utf-8"), int(rows[1]), skip_header)
        where = f"{second}:"
    raise DataError(f"{path}:{where} field '{field}' {dup} appears more than once")


def check_known_items(
    raw_item: np.ndarray,
    table: ItemTable,
    data_path: Path,
    item_file: Path,
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
