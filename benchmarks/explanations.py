"""How candidate-specific are the reasons given with each pick?

    python benchmarks/explanations.py RUN [--users 100] [--k 10]

For a fixed, seeded sample of known users, takes each user's top-``k`` picks with
their reasons (the up to 3 watched movies that weighed most) and prints one JSON line
per explanation method:
- ``distinct_first``: the share of picks whose first reason differs from the most
  common first reason of the user's own list (0 when every pick cites the same film);
- ``reason_shares_genre``: the share of reasons that share a genre with the pick;
- ``reason_cooccurs``: the share of reasons watched by the same user within 10 rows of
  the pick somewhere in the training part (either order);
- ``either``: the share of reasons with one of the two.
Methods: ``model`` (what `bstrec recommend` and the server say: co-occurrence shares,
attention where the pick has no co-occurrence) and ``attention`` (the candidate's
attention row alone, the explanation of earlier rounds).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import torch

from bstrec.data.splits import make_split
from bstrec.models.cooccurrence import count_pairs
from bstrec.recommend import Recommender
from bstrec.run_dir import load_run

WINDOW = 10


def measure(rec: Recommender, users: list, k: int, pairs: set, ds) -> dict:
    genres = ds.item_genres
    pos = {str(m): i for i, m in enumerate(ds.item_ids.tolist())}
    distinct, picks_n, genre_hits, pair_hits, either, reasons_n = 0, 0, 0, 0, 0, 0
    for u in users:
        out = rec.for_user(u, k=k)
        firsts = [p.because[0].movie_id for p in out if p.because]
        common = Counter(firsts).most_common(1)[0][0] if firsts else None
        for p in out:
            if not p.because:
                continue
            picks_n += 1
            distinct += p.because[0].movie_id != common
            a = pos[str(p.movie_id)]
            for b in p.because:
                j = pos[str(b.movie_id)]
                g = bool((genres[a] & genres[j]).any())
                c = (a, j) in pairs or (j, a) in pairs
                genre_hits, pair_hits, either = genre_hits + g, pair_hits + c, either + (g or c)
                reasons_n += 1
    return {
        "users": len(users),
        "picks": picks_n,
        "reasons": reasons_n,
        "distinct_first": distinct / max(picks_n, 1),
        "reason_shares_genre": genre_hits / max(reasons_n, 1),
        "reason_cooccurs": pair_hits / max(reasons_n, 1),
        "either": either / max(reasons_n, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.run)
    ds = run.dataset
    rows = make_split(ds, run.config.data.split).train_rows(ds.user_offsets)
    keys, _ = count_pairs(
        ds.item.astype(np.int64), ds.user, rows, ds.n_items + 1, WINDOW, symmetric=False
    )
    pairs = set(
        zip((keys // (ds.n_items + 1)).tolist(), (keys % (ds.n_items + 1)).tolist(), strict=True)
    )
    pick = np.random.default_rng(0).choice(ds.n_users, min(args.users, ds.n_users), replace=False)
    users = [ds.user_ids[i].item() for i in np.sort(pick)]
    model = run.model
    print(
        json.dumps({"method": "model", **measure(Recommender(run), users, args.k, pairs, ds)}),
        flush=True,
    )
    if hasattr(model, "attention"):  # BST
        model.explain = model.attention
        print(
            json.dumps(
                {"method": "attention", **measure(Recommender(run), users, args.k, pairs, ds)}
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
