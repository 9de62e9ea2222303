"""Build any model of the contract from a config: BST by gradient, baselines in closed form."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bstrec.config import RunConfig
from bstrec.data.interactions import Dataset
from bstrec.models.base import ScoringModel
from bstrec.models.baselines import Popularity, RatingBaseline
from bstrec.models.bst import BST, CatalogFeatures
from bstrec.models.cooccurrence import Cooccurrence, tune_cooccurrence
from bstrec.models.ease import EASE, tune_ease
from bstrec.models.factors import RatingFactors, tune_rating_factors
from bstrec.models.itemknn import ItemKNN, tune_itemknn
from bstrec.models.sasrec import SASRec

RANKING_BASELINES = ("popularity", "cooccurrence", "itemknn", "ease")
RATING_BASELINES = ("global-mean", "user-mean", "bias", "factors")
TRAINED = ("bst", "sasrec")  # by gradient, with the trainer
MODELS = (*TRAINED, *RANKING_BASELINES, *RATING_BASELINES)


def catalog_features(ds: Dataset, user_feature_names: list[str]) -> CatalogFeatures:
    return CatalogFeatures(
        n_items=ds.n_items,
        n_users=ds.n_users,
        item_genres=torch.from_numpy(ds.item_genres.astype(np.float32)),
        item_year=torch.from_numpy(ds.item_year.astype(np.int64)),
        user_vocab_sizes=[len(ds.user_vocab[n]) for n in user_feature_names],
    )


def build_model(cfg: RunConfig, cat: CatalogFeatures) -> ScoringModel:
    """An untrained model with the right shapes (also used to load checkpoints)."""
    m = cfg.model
    if m.name == "bst":
        return BST(m, cat, cfg.data.max_len)
    if m.name == "sasrec":
        if m.task != "ranking":
            raise ValueError("sasrec ranks movies: use task ranking")
        return SASRec(m, cat.n_items, cfg.data.max_len)
    if m.name == "popularity":
        return Popularity(cat.n_items)
    if m.name == "cooccurrence":
        return Cooccurrence(cat.n_items)
    if m.name == "itemknn":
        return ItemKNN(cat.n_items)
    if m.name == "ease":
        return EASE(cat.n_items)
    if m.name == "factors":
        return RatingFactors(cat.n_items, _factor_width(m.rating_factors))
    if m.name in RATING_BASELINES:
        return RatingBaseline(cat.n_items, cat.n_users)
    raise ValueError(f"unknown model {m.name!r}; choose from {', '.join(MODELS)}")


def fit_baseline(
    cfg: RunConfig,
    ds: Dataset,
    train_rows: np.ndarray,
    validate: Callable[[ScoringModel], float] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[ScoringModel, list[dict]]:
    """Fit a closed-form baseline on ``train_rows``; ``validate(model)`` (validation
    NDCG@10, or RMSE for ``factors``) tunes the hyper-parameters of those that have
    some. Returns the model and the tuning grid's trials (empty for the untuned)."""
    m = cfg.model
    if m.name == "popularity":
        return Popularity.fit(ds.item, train_rows, ds.n_items), []
    if m.name == "cooccurrence":
        return fit_wide(ds, train_rows, validate, log)
    if m.name in ("itemknn", "ease"):
        if validate is None:
            raise ValueError(f"{m.name} tunes on validation targets: pass validate")
        tune = tune_itemknn if m.name == "itemknn" else tune_ease
        return tune(ds.item, ds.user, train_rows, ds.n_items, validate, log=log)
    if m.name in RATING_BASELINES:
        if not ds.has_ratings:
            raise ValueError(f"{m.name} needs ratings; data set {ds.name} has none")
        if m.name == "factors":
            if validate is None:
                raise ValueError("factors tunes on validation targets: pass validate (RMSE)")
            k = _factor_width(m.rating_factors)
            return tune_rating_factors(
                ds.user, ds.item, ds.rating, train_rows, ds.n_users, ds.n_items, k, validate, log
            )
        return RatingBaseline.fit(
            m.name, ds.user, ds.item, ds.rating, train_rows, ds.n_users, ds.n_items
        ), []
    raise ValueError(
        f"{m.name} is not a closed-form baseline; those are "
        f"{', '.join(RANKING_BASELINES + RATING_BASELINES)}"
    )


def fit_wide(
    ds: Dataset,
    train_rows: np.ndarray,
    validate: Callable[[ScoringModel], float] | None,
    log: Callable[[str], None] | None = None,
) -> tuple[Cooccurrence, list[dict]]:
    """The co-occurrence model tuned on validation (a baseline, and BST's wide input),
    with the grid's trials."""
    if validate is None:
        raise ValueError("cooccurrence tunes on validation targets: pass validate")
    return tune_cooccurrence(ds.item, ds.user, train_rows, ds.n_items, validate, log=log)


def _factor_width(k: int) -> int:
    if k <= 0:
        raise ValueError("model factors needs model.rating_factors > 0 (its factor width)")
    return k


def task_of(name: str, requested: str) -> str:
    if name in RATING_BASELINES:
        return "rating"
    if name in RANKING_BASELINES:
        return "ranking"
    return requested
