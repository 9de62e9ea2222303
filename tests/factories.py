"""Small in-memory data sets for unit tests (no files, no real MovieLens)."""

from __future__ import annotations

import numpy as np

from bstrec.data.interactions import ItemTable, UserTable, build_dataset, encode_categorical


def tiny_dataset(
    n_users: int = 30, n_items: int = 40, per_user: int = 12, seed: int = 0, chain: bool = True
):
    """Users walk a chain of movies (i -> i + 1) from random starts, with noise.

    Timestamps repeat (several ratings per second), as in MovieLens.
    """
    rng = np.random.default_rng(seed)
    users, items, ratings, times = [], [], [], []
    for u in range(n_users):
        start = rng.integers(0, n_items)
        t = 1_000_000 + int(rng.integers(0, 10_000))
        for k in range(per_user):
            i = (start + k) % n_items if chain and rng.random() < 0.8 else rng.integers(n_items)
            users.append(u + 1)
            items.append(int(i) + 10)  # raw ids are not 0-based indexes
            ratings.append(int(rng.integers(1, 6)))
            t += int(rng.integers(0, 3)) * 30
            times.append(t)
    item_ids = np.arange(10, 10 + n_items + 3)  # 3 movies nobody rated
    genres = rng.random((len(item_ids), 5)) < 0.3
    table = ItemTable(
        ids=item_ids,
        titles=np.array([f"Movie {i} ({1990 + i % 20})" for i in item_ids]),
        years=(1990 + item_ids % 20).astype(np.int32),
        genres=genres,
        genre_names=[f"g{k}" for k in range(5)],
    )
    uids = np.arange(1, n_users + 1)
    users_tab = UserTable(
        ids=uids,
        features={
            "gender": encode_categorical(np.where(uids % 2 == 0, "F", "M")),
            "age": encode_categorical((uids % 3).astype(str)),
        },
    )
    return build_dataset(
        "tiny",
        np.array(users),
        np.array(items),
        np.array(ratings, float),
        np.array(times),
        table,
        users_tab,
        {"tiny": str(seed)},
    )


def counting_validator(ds, split, max_len: int = 6):
    """``val_ndcg(model)``, validation NDCG@10 as the tuners take it, and the list that
    records one entry per call (to check how often a tuner evaluated)."""
    from bstrec.data.batches import SequenceStore
    from bstrec.evaluate import evaluate_ranking

    store, calls = SequenceStore(ds), []

    def val_ndcg(model) -> float:
        calls.append(1)
        return evaluate_ranking(model, store, split.targets("val"), max_len)["NDCG@10"]

    return val_ndcg, calls
