"""Descriptive statistics of a data set (what `bstrec data info` prints)."""

from __future__ import annotations

import numpy as np

from bstrec.data.interactions import Dataset
from bstrec.values import iso_time


def describe(ds: Dataset) -> dict:
    lengths = ds.seq_lengths()
    out = {
        "name": ds.name,
        "checksum": ds.checksum,
        "users": int(ds.n_users),
        "movies": int(ds.n_items),
        "interactions": int(ds.n_interactions),
        "density": float(ds.n_interactions / max(1, ds.n_users * ds.n_items)),
        "time_range": [iso_time(ds.timestamp.min()), iso_time(ds.timestamp.max())]
        if ds.n_interactions
        else None,
        "sequence_length_percentiles": {
            str(p): float(np.percentile(lengths, p)) for p in (0, 5, 25, 50, 75, 95, 100)
        },
        "user_features": sorted(ds.user_features),
        "genres": len(ds.genre_names),
    }
    if ds.has_ratings:
        values, counts = np.unique(ds.rating, return_counts=True)
        out["ratings_histogram"] = {f"{v:g}": int(c) for v, c in zip(values, counts, strict=True)}
    return out
