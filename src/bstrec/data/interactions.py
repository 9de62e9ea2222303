"""The in-memory data set: interaction arrays grouped by user, id maps, features.

Everything downstream (splits, batches, models) works on dense indexes. Users and
movies are numbered 0..n-1 in order of first appearance of their raw id in sorted
order; ``user_ids[u]`` / ``item_ids[i]`` map back to the raw ids of the source files.

Interactions are stored grouped by user, each user's block sorted by timestamp with a
stable sort, so ties keep the order of the source file (PROTOCOL.md). ``user_offsets``
is a CSR index: user ``u`` owns rows ``user_offsets[u]:user_offsets[u + 1]``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

# User features that MovieLens 1M / 100K carry. Index 0 of every vocabulary means
# "unknown", so a person who is not in the data set still gets valid embeddings.
UNKNOWN = "<unk>"


class DataError(ValueError):
    """Bad input data: the message names the file, line and field where possible."""


@dataclass
class Dataset:
    name: str
    user_ids: np.ndarray  # (n_users,) raw user ids, int64 or str
    item_ids: np.ndarray  # (n_items,) raw movie ids, int64 or str
    user: np.ndarray  # (N,) int32 user index, grouped by user
    item: np.ndarray  # (N,) int32 item index
    rating: np.ndarray  # (N,) float32 stars, NaN where the data set has none
    timestamp: np.ndarray  # (N,) int64 seconds
    user_offsets: np.ndarray  # (n_users + 1,) int64 CSR offsets into the arrays above
    item_titles: np.ndarray  # (n_items,) str
    item_year: np.ndarray  # (n_items,) int32 release year, 0 when unknown
    item_genres: np.ndarray  # (n_items, n_genres) bool multi-hot
    genre_names: list[str]
    # categorical user features: name -> (n_users,) int32 codes into user_vocab[name]
    user_features: dict[str, np.ndarray] = field(default_factory=dict)
    user_vocab: dict[str, list[str]] = field(default_factory=dict)
    # movies listed in the item file but never rated: raw id -> (title, year, genres).
    # Not part of the catalogue (PROTOCOL.md), kept so errors can say "known but unrated".
    unrated_items: dict = field(default_factory=dict)
    checksum: str = ""  # digest of the source files this was read from
    sources: dict[str, str] = field(default_factory=dict)  # file name -> md5

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.item)

    @property
    def has_ratings(self) -> bool:
        return bool(len(self.rating)) and not np.isnan(self.rating).all()

    def seq_lengths(self) -> np.ndarray:
        return np.diff(self.user_offsets)

    def user_index(self) -> dict:
        return {_key(r): i for i, r in enumerate(self.user_ids.tolist())}

    def validate(self) -> None:
        """Cheap structural invariants; raises AssertionError on a bug in a reader."""
        n = self.n_interactions
        assert self.user_offsets[0] == 0 and self.user_offsets[-1] == n
        assert len(self.user) == len(self.rating) == len(self.timestamp) == n
        assert np.all(np.diff(self.user_offsets) >= 0)
        assert np.all(np.diff(self.user) >= 0), "interactions not grouped by user"
        assert len(self.item_titles) == len(self.item_year) == len(self.item_genres)
        assert len(self.item_titles) == self.n_items


def _key(raw):
    """Raw ids compare as strings when they look like numbers: '1193' and 1193 match."""
    return str(raw)


def build_dataset(
    name: str,
    raw_user: np.ndarray,
    raw_item: np.ndarray,
    rating: np.ndarray,
    timestamp: np.ndarray,
    item_table: ItemTable,
    user_table: UserTable | None = None,
    sources: dict[str, str] | None = None,
) -> Dataset:
    """Turn raw interaction columns (file order) into a :class:`Dataset`.

    Raw ids may be ints or strings. Items in the interactions must exist in
    ``item_table`` (checked by the caller, who knows file and line). Only items with at
    least one interaction enter the catalogue; only users with interactions get indexes.
    """
    user_ids, user_inv = unique_inverse(raw_user)
    item_ids, item_inv = unique_inverse(raw_item)
    timestamp = np.asarray(timestamp, dtype=np.int64)
    order = user_time_order(user_inv, timestamp)
    user = user_inv[order]
    counts = np.bincount(user, minlength=len(user_ids))
    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])

    # Item metadata aligned to the catalogue order.
    pos = item_table.positions(item_ids)
    titles = item_table.titles[pos]
    years = item_table.years[pos]
    genres = item_table.genres[pos]
    rated = np.zeros(len(item_table.ids), dtype=bool)
    rated[pos] = True
    unrated = {
        _key(item_table.ids[j]): (
            str(item_table.titles[j]),
            int(item_table.years[j]),
            [g for g, on in zip(item_table.genre_names, item_table.genres[j], strict=True) if on],
        )
        for j in np.flatnonzero(~rated)
    }

    user_features: dict[str, np.ndarray] = {}
    user_vocab: dict[str, list[str]] = {}
    if user_table is not None:
        codes = user_table.codes_for(user_ids)
        for fname, (_, vocab) in user_table.features.items():
            user_features[fname] = codes[fname].astype(np.int32)
            user_vocab[fname] = vocab

    ds = Dataset(
        name=name,
        user_ids=user_ids,
        item_ids=item_ids,
        user=user,
        item=item_inv[order],
        rating=np.asarray(rating, dtype=np.float32)[order],
        timestamp=timestamp[order],
        user_offsets=offsets,
        item_titles=np.asarray(titles).astype(str),
        item_year=np.asarray(years, dtype=np.int32),
        item_genres=np.asarray(genres, dtype=bool),
        genre_names=list(item_table.genre_names),
        user_features=user_features,
        user_vocab=user_vocab,
        unrated_items=unrated,
        sources=dict(sources or {}),
    )
    ds.checksum = combined_checksum(ds.sources)
    ds.validate()
    return ds


def unique_inverse(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(raw, return_inverse=True)`` with int32 codes, in O(n) for dense ids.

    MovieLens ids are small non-negative integers, so a presence table replaces the
    sort that np.unique does (about 25 ms on a million shuffled movie ids).
    """
    raw = np.asarray(raw)
    n = len(raw)
    if n and raw.dtype.kind in "iu":
        lo, hi = int(raw.min()), int(raw.max())
        if lo >= 0 and hi < 4 * n + (1 << 20):
            present = np.zeros(hi + 1, dtype=bool)
            present[raw] = True
            ids = np.flatnonzero(present).astype(raw.dtype)
            lut = np.zeros(hi + 1, dtype=np.int32)
            lut[ids] = np.arange(len(ids), dtype=np.int32)
            return ids, lut[raw]
    ids, inv = np.unique(raw, return_inverse=True)
    return ids, inv.reshape(-1).astype(np.int32)


def user_time_order(user: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """Row order grouped by user, each user's rows by time; ties keep file order.

    Both keys packed into one int64 and sorted stably beats np.lexsort by 2-3x; the
    packing needs user < 2**29 and a time span < 2**34 s (540 years), else lexsort.
    """
    if len(user) == 0:
        return np.zeros(0, dtype=np.int64)
    t0 = int(timestamp.min())
    span = int(timestamp.max()) - t0
    if int(user.max()) < (1 << 29) and span < (1 << 34):
        key = (user.astype(np.int64) << 34) | (timestamp - t0)
        return np.argsort(key, kind="stable")
    return np.lexsort((timestamp, user))


def combined_checksum(sources: dict[str, str]) -> str:
    h = hashlib.sha256()
    for k in sorted(sources):
        h.update(f"{k}={sources[k]};".encode())
    return h.hexdigest()[:16]


@dataclass
class ItemTable:
    """Movie metadata from the item file, in file order (includes unrated movies)."""

    ids: np.ndarray  # raw ids
    titles: np.ndarray  # str
    years: np.ndarray  # int32, 0 = unknown
    genres: np.ndarray  # (n, G) bool
    genre_names: list[str]

    def positions(self, raw_ids: np.ndarray) -> np.ndarray:
        """Row of each raw id in this table; raw ids must all be present."""
        return _positions(self.ids, raw_ids)

    def contains(self, raw_ids: np.ndarray) -> np.ndarray:
        return np.isin(raw_ids, self.ids)

    @staticmethod
    def placeholder(raw_ids: np.ndarray) -> ItemTable:
        """For data sets without an item file: ids only, no titles or features."""
        ids = np.unique(raw_ids)
        return ItemTable(
            ids=ids,
            titles=np.array([str(i) for i in ids.tolist()], dtype=object).astype(str),
            years=np.zeros(len(ids), dtype=np.int32),
            genres=np.zeros((len(ids), 0), dtype=bool),
            genre_names=[],
        )


@dataclass
class UserTable:
    """User demographics in file order: feature name -> (codes, vocabulary)."""

    ids: np.ndarray
    features: dict[str, tuple[np.ndarray, list[str]]]

    def positions(self, raw_ids: np.ndarray) -> np.ndarray:
        """Row of each raw id; users missing from the table get -1 (features unknown)."""
        sorter = np.argsort(self.ids, kind="stable")
        idx = np.searchsorted(self.ids, raw_ids, sorter=sorter)
        idx = np.clip(idx, 0, len(self.ids) - 1)
        rows = sorter[idx]
        found = self.ids[rows] == raw_ids
        return np.where(found, rows, -1)

    def codes_for(self, raw_ids: np.ndarray) -> dict[str, np.ndarray]:
        rows = self.positions(raw_ids)
        return {
            name: np.where(rows >= 0, codes[np.maximum(rows, 0)], 0)
            for name, (codes, _) in self.features.items()
        }


def _positions(table_ids: np.ndarray, raw_ids: np.ndarray) -> np.ndarray:
    sorter = np.argsort(table_ids, kind="stable")
    idx = np.searchsorted(table_ids, raw_ids, sorter=sorter)
    return sorter[np.clip(idx, 0, len(table_ids) - 1)]


def encode_categorical(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Codes 1..k for the distinct values (sorted), 0 reserved for unknown."""
    vocab, inv = np.unique(values.astype(str), return_inverse=True)
    return (inv + 1).astype(np.int32), [UNKNOWN, *vocab.tolist()]
