"""Negative sampling and the training loss of one batch."""

from __future__ import annotations

import math

import numpy as np
import torch

from bstrec.config import RunConfig


class NegativeSampler:
    def __init__(self, kind: str, n_items: int, counts: np.ndarray, gen: torch.Generator):
        self.kind, self.n_items, self.gen = kind, n_items, gen
        if kind == "popularity":
            p = torch.from_numpy(counts.astype(np.float64)) ** 0.75 + 1e-3
            self.probs = (p / p.sum()).float()
            self.logq = torch.log(self.probs * n_items)  # relative to uniform

    def sample(self, shape) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Item tokens (1..n) and, for popularity sampling, their log-probability ratio."""
        if self.kind == "uniform":
            return torch.randint(1, self.n_items + 1, shape, generator=self.gen), None
        n = math.prod(shape)
        idx = torch.multinomial(self.probs, n, replacement=True, generator=self.gen)
        return (idx + 1).view(shape), self.logq[idx].view(shape)


def training_loss(model, batch, cfg: RunConfig, sampler: NegativeSampler, device) -> torch.Tensor:
    """The configured loss of one batch: MSE for rating, sampled negatives for ranking."""
    if model.task == "rating":
        return model.loss(batch)
    if cfg.train.loss == "bce":
        neg, _ = sampler.sample((len(batch), cfg.train.negatives))
        return model.loss(batch, neg.to(device), loss="bce")
    neg, logq = sampler.sample((cfg.train.negatives,))
    return model.loss(
        batch,
        neg.to(device),
        loss="sampled-softmax",
        neg_logq=None if logq is None else logq.to(device),
    )
