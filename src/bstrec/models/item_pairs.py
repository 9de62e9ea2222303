"""What the item-to-item models share: a sparse movie x movie matrix read from the
user's last movies, and the popularity tie-break.

Co-occurrence (pair counts) and item-kNN (similarities) both score a candidate as
``sum_j decay**j * M[history_j, candidate]`` over the user's last ``last_n`` movies.
``ItemPairs`` holds M as sorted ``a * size + b`` keys over item tokens, so it fits any
catalogue: a pair lookup is a binary search, a full-catalogue row a scatter of the
history movies' rows. Small catalogues (up to ``DENSE_MAX_ITEMS``) also keep a dense
copy in memory, built from the sparse one and never saved: a BST training step's
(B, n, C) lookups were 40% of its time as binary searches.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

DENSE_MAX_ITEMS = 6000  # a dense float32 copy of at most 144 MB


def recent(hist_item: torch.Tensor, last_n: int, decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``last_n`` history tokens (B, n), newest first, and weights decay**j
    (0 for padding)."""
    n = min(last_n, hist_item.shape[1])
    last = hist_item[:, hist_item.shape[1] - n :].flip(1)
    w = decay ** torch.arange(n, dtype=torch.float32, device=hist_item.device)
    return last, w[None, :] * (last > 0)


def training_popularity(item: np.ndarray, train_rows: np.ndarray, n_items: int) -> np.ndarray:
    """Training rows per item token (token 0, the padding, counts 0)."""
    pop = np.bincount(item[train_rows].astype(np.int64) + 1, minlength=n_items + 1)
    pop[0] = 0
    return pop.astype(np.float32)


def tie_break(pop: torch.Tensor, popularity: torch.Tensor) -> torch.Tensor:
    """A popularity term too small to reorder real scores: it only orders ties, so that
    a history without evidence still gets the most watched movies, not arbitrary ones."""
    return 1e-6 * pop / popularity.max().clamp(min=1.0)


class ItemPairs(nn.Module):
    """A sparse (size x size) matrix over item tokens; its tensors are buffers."""

    def __init__(self, n_items: int):
        super().__init__()
        self.n_items, self.size = n_items, n_items + 1
        self.register_buffer("keys", torch.zeros(0, dtype=torch.long))
        self.register_buffer("values", torch.zeros(0))
        self.register_buffer("row_ptr", torch.zeros(self.size + 1, dtype=torch.long))
        self._dense: torch.Tensor | None = None

    def set(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """``keys`` = a * size + b, sorted ascending; ``values`` the entries."""
        dev = self.keys.device
        self.keys, self.values = keys.long().to(dev), values.float().to(dev)
        bounds = torch.arange(self.size + 1, dtype=torch.long, device=dev) * self.size
        self.row_ptr = torch.searchsorted(self.keys, bounds)
        self._dense = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the number of stored pairs is known only from the checkpoint: take its shapes
        for name in ("keys", "values"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        self._dense = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def dense(self) -> torch.Tensor | None:
        """(size, size) entries, for catalogues small enough; else None."""
        if self.n_items > DENSE_MAX_ITEMS:
            return None
        if self._dense is None or self._dense.device != self.keys.device:
            d = torch.zeros(self.size * self.size, device=self.keys.device)
            d[self.keys] = self.values
            self._dense = d.view(self.size, self.size)
        return self._dense

    def lookup(self, last: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """M[last_j, c] for history tokens ``last`` (B, n), candidates (B, C): (B, n, C)."""
        dense = self.dense()
        if dense is not None:
            return dense[last[:, :, None], cands[:, None, :]]
        if len(self.keys) == 0:
            return torch.zeros(last.shape[0], last.shape[1], cands.shape[1], device=cands.device)
        q = last[:, :, None] * self.size + cands[:, None, :]  # (B, n, C)
        idx = torch.searchsorted(self.keys, q).clamp(max=len(self.keys) - 1)
        return torch.where(self.keys[idx] == q, self.values[idx], 0.0)

    def weighted(self, last: torch.Tensor, w: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """sum_j w_j * M[last_j, c] for candidates ``cands`` (B, C): (B, C)."""
        return (self.lookup(last, cands) * w[:, :, None]).sum(1)

    def weighted_rows(self, last: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """sum_j w_j * M[last_j, :] for every token 0..n_items: (B, size)."""
        dense = self.dense()
        if dense is not None:
            # index_select copies whole rows: 4x faster here than dense[last]
            rows = dense.index_select(0, last.reshape(-1)).unflatten(0, last.shape)
            return (w[:, None, :] @ rows).squeeze(1)  # (B, 1, n) @ (B, n, size)
        b, n = last.shape
        out = torch.zeros(b, self.size, device=last.device)
        flat = last.reshape(-1)
        start, lens = self.row_ptr[flat], self.row_ptr[flat + 1] - self.row_ptr[flat]
        total = int(lens.sum())
        if total == 0:
            return out
        seg = torch.repeat_interleave(torch.arange(b * n, device=out.device), lens)
        first = torch.repeat_interleave(start - (torch.cumsum(lens, 0) - lens), lens)
        pos = first + torch.arange(total, device=out.device)
        cols = self.keys[pos] - flat[seg] * self.size
        out.index_put_((seg // n, cols), self.values[pos] * w.reshape(-1)[seg], accumulate=True)
        return out
