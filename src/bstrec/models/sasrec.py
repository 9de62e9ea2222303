"""SASRec (Kang & McAuley, 2018): causal self-attention over the history, next movie at
every position, scored by a dot product with the item embeddings.

Trained with a full-catalogue cross-entropy at every position (the recipe later work
found strongest, e.g. Klenitskiy & Vasilev, 2023) instead of the paper's one sampled
negative; above ``FULL_SOFTMAX_MAX_ITEMS`` movies, over a shared sample of them. A
training example is a target row with its L previous rows; the trainer takes one such
window every L rows of each user (``rows_stride``), so each training interaction is a
target once per epoch. Peer of BST in the same harness: same data,
same trainer, checkpoints, resume and torchrun.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bstrec.config import ModelConfig
from bstrec.data.batches import Batch
from bstrec.models.base import ScoringModel

# Up to this many movies the softmax runs over the whole catalogue at every position.
# Beyond it (ML-10M and up: 10K-87K movies) a (B x L, n_items) logit matrix costs
# seconds per step on a CPU (4.6 s at 10K movies), so the tower's loss reads
# SAMPLED_POSITIONS random positions of the batch, and every softmax runs over the
# batch's own targets plus SAMPLED_CANDIDATES uniform draws, shared by the batch.
FULL_SOFTMAX_MAX_ITEMS = 8192
SAMPLED_CANDIDATES = 2048
SAMPLED_POSITIONS = 2048


def softmax_candidates(
    n_items: int, labels: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The softmax's candidates for item tokens ``labels`` (any shape): (None, labels - 1)
    for the whole catalogue, or (sorted tokens (C,), each label's column in them)."""
    if n_items <= FULL_SOFTMAX_MAX_ITEMS:
        return None, labels - 1
    draws = torch.randint(1, n_items + 1, (SAMPLED_CANDIDATES,), device=labels.device)
    cands = torch.unique(torch.cat([labels.reshape(-1), draws]))  # sorted
    return cands, torch.searchsorted(cands, labels)


class SASRec(ScoringModel):
    def __init__(self, cfg: ModelConfig, n_items: int, max_len: int):
        super().__init__()
        self.n_items, self.max_len = n_items, max_len
        self.rows_stride = max_len  # one window per L targets: every position is a target
        d = cfg.dim
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        # unit-scale logits at the start: N(0, 1) embeddings gave initial losses of ~40
        nn.init.normal_(self.item_emb.weight, std=d**-0.5)
        with torch.no_grad():
            self.item_emb.weight[0] = 0
        self.pos_emb = nn.Embedding(max_len, d)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            d,
            cfg.heads,
            cfg.ffn_mult * d,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, max(cfg.blocks, 2), enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)

    def states(self, hist_item: torch.Tensor) -> torch.Tensor:
        """(B, L, D): position i has read the history up to and including i."""
        b, n = hist_item.shape
        if b == 0:  # torch's attention cannot reshape an empty mask
            return self.item_emb.weight.new_zeros(0, n, self.item_emb.embedding_dim)
        x = self.item_emb(hist_item) * self.item_emb.embedding_dim**0.5
        x = self.drop(x + self.pos_emb.weight[None, :n])
        pad = hist_item == 0  # (B, L) left padding
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        # a padded query may see itself only: never an all-masked (NaN) row
        blocked = causal[None] | pad[:, None, :]
        blocked = blocked & ~torch.eye(n, dtype=torch.bool, device=x.device)[None]
        mask = blocked.repeat_interleave(self.encoder.layers[0].self_attn.num_heads, 0)
        return self.norm(self.encoder(x, mask=mask))

    def user_vector(self, batch: Batch) -> torch.Tensor:
        return self.states(batch.hist_item)[:, -1]  # (B, D) the newest watch

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        u = self.user_vector(batch)
        if candidates.dim() == 1:
            return u @ self.item_emb(candidates).T
        return (u[:, None, :] * self.item_emb(candidates)).sum(-1)

    def score_all(self, batch: Batch) -> torch.Tensor:
        return self.user_vector(batch) @ self.item_emb.weight[1:].T

    def loss(
        self,
        batch: Batch,
        negatives: torch.Tensor | None = None,
        loss: str = "sampled-softmax",
        neg_logq: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Its own softmax over the catalogue at every position: sampled negatives and
        the loss kind are not used."""
        return self.loss_from_states(self.states(batch.hist_item), batch)

    def loss_from_states(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Full cross-entropy of the next movie at every real position of the window."""
        labels = torch.cat([batch.hist_item[:, 1:], batch.target[:, None]], 1)  # (B, L)
        real = (batch.hist_item > 0) & (labels > 0)
        states, labels = h[real], labels[real]  # (N, D), (N,)
        scale = 1.0
        if self.n_items > FULL_SOFTMAX_MAX_ITEMS and len(labels) > SAMPLED_POSITIONS:
            keep = torch.randperm(len(labels), device=labels.device)[:SAMPLED_POSITIONS]
            scale = len(labels) / SAMPLED_POSITIONS  # the sum's expected value is kept
            states, labels = states[keep], labels[keep]
        cands, target = softmax_candidates(self.n_items, labels)
        emb = self.item_emb.weight[1:] if cands is None else self.item_emb.weight[cands]
        logits = states @ emb.T  # (N, n_items or C)
        # a sum over positions per window, averaged over windows: each window weighs the
        # same whatever its padding, so ranks' shares of a batch combine exactly (DDP)
        ce = F.cross_entropy(logits, target, reduction="sum") * scale
        return ce / (len(batch) * h.shape[1])
