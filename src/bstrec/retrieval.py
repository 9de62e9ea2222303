"""Retrieve, then rank: a cheap stage picks each user's candidates, the model ranks them.

For big catalogues (ML-32M: 87K movies) BST's head, which runs once per (user,
candidate), is the expensive part of a full-catalogue pass. The model's own cheap parts
(``ScoringModel.retrieval_scores``) choose the ``m`` best unseen movies, and only those
go through ``score``. Movies the stage does not return rank below every returned one,
tied with each other (../shared/PROTOCOL.md, Large data): a missed target ranks last.
"""

from __future__ import annotations

from typing import Any

import torch

from bstrec.data.batches import Batch
from bstrec.models.base import ScoringModel

# Evaluation retrieves by default above this many movies. On ml-1m-u2999 (3,615 movies)
# retrieving 50 to 500 left validation and test NDCG@10 unchanged while scoring 9x
# faster; at 10,000 movies a full pass over 10,000 users took 550 s on one CPU thread.
# Catalogues the size of ML-1M keep the plain full ranking of protocol R.
AUTO_MIN_ITEMS = 5000
# Recommendations (serving, `bstrec recommend`, the API) retrieve above this many: on
# ml-1m-u2999 (3,615 movies, trained default) 200 candidates gave the full ranking's
# very top 10 for 300 of 300 known users and 200 of 200 typed histories, in a quarter
# of a history's model time (2.3-2.6 against 7.5-11.5 ms, one thread; README, Serving)
SERVE_MIN_ITEMS = 2000
DEFAULT_CANDIDATES = 200


def retrieval_size(
    model: ScoringModel, candidates: int | None, min_items: int = AUTO_MIN_ITEMS
) -> int:
    """How many candidates to retrieve: ``candidates`` if given (0 = rank everything),
    else ``DEFAULT_CANDIDATES`` for catalogues above ``min_items`` movies when the
    model has a cheap stage (the peers are cheap themselves: they rank everything)."""
    if candidates is None:
        big = model.n_items > min_items and model.retrieves
        candidates = DEFAULT_CANDIDATES if big else 0
    if candidates < 0:
        raise ValueError(
            f"candidates must be >= 0 (0 = rank the whole catalogue), not {candidates}"
        )
    return candidates


@torch.no_grad()
def retrieve_then_rank(
    model: ScoringModel,
    batch: Batch,
    m: int,
    seen: torch.Tensor | None = None,
    side: Any | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-catalogue scores (B, n_items) where only the retrieved ``m`` are the model's
    own; every other movie gets the lowest finite score. ``seen`` (B, n_items) bool: movies
    never to retrieve (the input history). ``side``: the model's ``user_side(batch)``,
    if the caller has it already. Also returns the retrieved item indexes (B, m).
    """
    side, picked = retrieve(model, batch, m, seen, side)
    shared = {} if side is None else {"side": side}
    own = model.score(batch, picked + 1, **shared)  # (B, m)
    return spread(own, picked, model.n_items), picked


def retrieve(
    model: ScoringModel,
    batch: Batch,
    m: int,
    seen: torch.Tensor | None = None,
    side: Any | None = None,
) -> tuple[Any, torch.Tensor]:
    """The cheap stage alone: (the ``side`` it used, the ``m`` retrieved item indexes (B, m))."""
    if not model.retrieves:
        raise ValueError(
            f"{type(model).__name__} has no retrieval stage; it ranks the "
            "whole catalogue (use candidates=0)"
        )
    if side is None:
        side = model.user_side(batch)  # both stages read the same history encoding
    shared = {} if side is None else {"side": side}
    cheap = model.retrieval_scores(batch, **shared)
    if seen is not None:
        cheap = cheap.masked_fill(seen, float("-inf"))
    m = min(m, cheap.shape[1])
    return side, cheap.topk(m, dim=1).indices  # (B, m) item indexes


def spread(own: torch.Tensor, picked: torch.Tensor, n_items: int) -> torch.Tensor:
    """The retrieved movies' scores ``own`` (B, m) as full-catalogue scores (B, n_items):
    every movie not retrieved gets the lowest finite score."""
    own = own.float()
    low = torch.finfo(own.dtype).min
    scores = torch.full((own.shape[0], n_items), low, device=own.device)
    # a returned movie's own score may itself be very low: keep it above the rest
    scores.scatter_(
        1, picked, own.clamp(min=torch.nextafter(torch.tensor(low), torch.tensor(0.0)).item())
    )
    return scores
