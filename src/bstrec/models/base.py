"""The contract every model and baseline follows (after RecBole's, smaller): ``ScoringModel``.

Evaluation, recommendation and serving call only ``score`` and ``score_all``, so BST
and the baselines are measured by the same code. Scores are "higher is better" for
ranking models and predicted stars for rating models; column ``j`` of ``score_all``
is item index ``j`` (item token ``j + 1``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bstrec.data.batches import Batch


class ScoringModel(nn.Module):
    task: str = "ranking"  # ranking | rating
    n_items: int

    def loss(
        self,
        batch: Batch,
        negatives: torch.Tensor | None = None,
        loss: str = "sampled-softmax",
        neg_logq: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training loss of a batch. Ranking: ``negatives`` item tokens, (N,) shared by
        the batch for ``loss="sampled-softmax"`` (``neg_logq``: their log sampling
        probability relative to uniform, for the correction) or (B, N) per target for
        ``loss="bce"``; a model with its own candidates may ignore them. Rating: MSE."""
        raise NotImplementedError(f"{type(self).__name__} is not trained by gradient")

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        """Scores of given candidates: ``candidates`` (B, C) or (C,) item tokens -> (B, C)."""
        raise NotImplementedError

    def score_all(self, batch: Batch) -> torch.Tensor:
        """Scores of the whole catalogue: (B, n_items)."""
        tokens = torch.arange(1, self.n_items + 1, device=batch.user.device)
        return self.score(batch, tokens)

    @property
    def retrieves(self) -> bool:
        """Whether ``retrieval_scores`` gives a cheap stage for retrieve-then-rank."""
        return False

    def user_side(self, batch: Batch) -> Any | None:
        """The candidate-independent part of scoring ``batch``, for a caller that makes
        several calls about one batch (retrieve, rank, explain) to compute once and pass
        as ``side=`` to ``score``, ``retrieval_scores`` and ``explain``. None: nothing to
        share (and ``side`` is then never passed)."""
        return None

    def retrieval_scores(self, batch: Batch, side: Any | None = None) -> torch.Tensor | None:
        """A cheap score of the whole catalogue (B, n_items) for a retrieval stage, whose
        top candidates ``score`` then ranks (``bstrec.retrieval``); None: the model is
        cheap enough to rank everything itself."""
        return None

    # what ``explain``'s weights are, in words ("" for models without a notion of it)
    explanation: str = ""

    def explain(
        self, batch: Batch, candidates: torch.Tensor, side: Any | None = None
    ) -> torch.Tensor | None:
        """How much each history position weighed in each candidate's score: (B, C, L).

        None for models without a notion of it.
        """
        return None
