"""Build any model of the contract from a config: BST by gradient, baselines in closed form."""

from __future__ import annotations

import numpy as np
import torch

from bstrec.config import RunConfig
from bstrec.data.interactions import Dataset
from bstrec.models.base import Recommender
from bstrec.models.baselines import Popularity, RatingBaseline, Transitions
from bstrec.models.bst import BST, CatalogFeatures

RANKING_BASELINES = ("popularity", "transitions")
RATING_BASELINES = ("global-mean", "user-mean", "bias")
MODELS = ("bst", *RANKING_BASELINES, *RATING_BASELINES)


def catalog_features(ds: Dataset, user_feature_names: list[str]) -> CatalogFeatures:
    return CatalogFeatures(
        n_items=ds.n_items,
        n_users=ds.n_users,
        item_genres=torch.from_numpy(ds.item_genres.astype(np.float32)),
        item_year=torch.from_numpy(ds.item_year.astype(np.int64)),
        user_vocab_sizes=[len(ds.user_vocab[n]) for n in user_feature_names],
    )


def build_model(cfg: RunConfig, cat: CatalogFeatures) -> Recommender:
    """An untrained model with the right shapes (also used to load checkpoints)."""
    m = cfg.model
    if m.name == "bst":
        return BST(m, cat, cfg.data.max_len)
    if m.name == "popularity":
        return Popularity(cat.n_items)
    if m.name == "transitions":
        return Transitions(cat.n_items, m.window, m.last_n, m.decay)
    if m.name in RATING_BASELINES:
        return RatingBaseline(cat.n_items, cat.n_users)
    raise ValueError(f"unknown model {m.name!r}; choose from {', '.join(MODELS)}")


def fit_baseline(cfg: RunConfig, ds: Dataset, train_rows: np.ndarray) -> Recommender:
    m = cfg.model
    if m.name == "popularity":
        return Popularity.fit(ds.item, train_rows, ds.n_items)
    if m.name == "transitions":
        return Transitions.fit(ds.item, ds.user, train_rows, ds.n_items, m.window, m.last_n,
                               m.decay)
    if m.name in RATING_BASELINES:
        if not ds.has_ratings:
            raise ValueError(f"{m.name} needs ratings; data set {ds.name} has none")
        return RatingBaseline.fit(m.name, ds.user, ds.item, ds.rating, train_rows,
                                  ds.n_users, ds.n_items)
    raise ValueError(f"{m.name} is not a closed-form baseline")


def task_of(name: str, requested: str) -> str:
    if name in RATING_BASELINES:
        return "rating"
    if name in RANKING_BASELINES:
        return "ranking"
    return requested
