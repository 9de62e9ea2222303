"""A serving pass (history encoding, retrieval, ranking, the top picks and their
reasons) as one function of tensors, run eagerly or as a traced TorchScript graph.

Why one function: the server's model thread and its event loop share one GIL, and every
torch operation called from Python gives the GIL up and waits to get it back. Run op by
op, a pass's few hundred operations made a model turn take about twice its CPU time
under load. ``serving_pass`` has no step that depends on the values (only on shapes),
so it traces; the graph runs as one call that gives the GIL up once, and skips the
Python between operations. The model thread is left a handful of operations a turn.

A trace is made per (rows, retrieved, depth) shape, the first time it is asked for, and
kept only if it gives the eager pass's outputs bit for bit on that first input;
otherwise that shape runs eagerly from then on. Every branch the pass takes depends on
shapes only (the batch size, the history length, the number retrieved), which a
shape's trace fixes, so one check per shape holds for its later inputs too.
"""

from __future__ import annotations

import logging
import threading
import warnings

import torch
from torch import nn

from bstrec.data.batches import Batch
from bstrec.retrieval import retrieve, spread

log = logging.getLogger(__name__)


def serving_pass(
    model: nn.Module,
    batch: Batch,
    seen: torch.Tensor,
    retrieved: int,
    depth: int,
    explain_top: int,
) -> tuple[torch.Tensor, ...]:
    """Retrieve ``retrieved`` movies per row, rank them, and explain the top ``depth``.

    Returns (scores (B, k), items (B, k), unseen (B,), reason items (B, k, E), reason
    weights (B, k, E)), k = min(depth, n_items), E = min(explain_top, L): the best
    unwatched picks (item indexes) and their scores; how many movies each row had not
    watched (a row with fewer than ``depth`` keeps only that many picks, and its reasons
    must be recomputed: Recommender._rank_stack); per pick, the item indexes (-1: none)
    and weights of the watches that weighed most (``BST.explain``, whose attention rows
    come from the ranking pass itself, not a second one).
    """
    side, picked = retrieve(model, batch, retrieved, seen)
    own, att = model.score_and_attention(batch, picked + 1, side=side)  # (B, m), (B, m, L)
    scores = spread(own, picked, model.n_items).masked_fill(seen, float("-inf"))
    top = scores.topk(min(depth, scores.shape[1]), dim=1)  # (B, k)
    unseen = torch.isfinite(scores).sum(1)  # (B,)
    # each pick's column among the retrieved: every pick is one where a row has at least
    # ``depth`` unwatched movies (the rows whose reasons are kept)
    col = (picked[:, None, :] == top.indices[:, :, None]).int().argmax(-1)  # (B, k)
    att = att.gather(1, col[..., None].expand(-1, -1, att.shape[-1]))  # (B, k, L)
    weights = model.explain(batch, top.indices + 1, side=side, attention=att)  # (B, k, L)
    top_w, top_pos = weights.topk(min(explain_top, weights.shape[-1]), dim=-1)  # (B, k, E)
    tok = batch.hist_item.gather(1, top_pos.flatten(1)).view_as(top_pos)
    valid = (tok > 0) & (top_w > 0)
    return (
        top.values,
        top.indices,
        unseen,
        torch.where(valid, tok - 1, -1),
        torch.where(valid, top_w, 0.0),
    )


def _as_checked():
    """Run a graph as traced, without the profiling executor's optimisation. That
    executor profiles a graph's first two runs (20 to 47 ms each here, against 1 to 6
    ms after) and then runs an optimised graph: one that was never checked against the
    eager pass, and no faster on this pass (stacks of 1, 4 and 8, idle: 1.1-1.3,
    3.2-3.3 and 5.2-5.6 ms without it, 1.3, 3.3 and 5.3 ms with it)."""
    return torch.jit.optimized_execution(False)


class ServingPass(nn.Module):
    """``serving_pass`` over flat tensors (seen, *batch fields): what a trace takes."""

    def __init__(self, model: nn.Module, retrieved: int, depth: int, explain_top: int):
        super().__init__()
        self.model = model
        self.retrieved, self.depth, self.explain_top = retrieved, depth, explain_top

    def forward(self, seen: torch.Tensor, *tensors: torch.Tensor):
        batch = Batch.from_tensors(tensors)
        return serving_pass(self.model, batch, seen, self.retrieved, self.depth, self.explain_top)


def traceable(model: nn.Module) -> bool:
    """Models whose serving pass this module knows how to trace: BST with its tower, and
    its co-occurrence part (if any) held dense. The sparse one (catalogues above
    ``item_pairs.DENSE_MAX_ITEMS`` movies) gathers as many pairs as the history's rows
    hold, a size that depends on the data, which a trace would fix to its first input's.
    """
    if getattr(model, "tower", None) is None or not hasattr(model, "encode_history"):
        return False
    wide = getattr(model, "wide", None)
    return wide is None or wide.counts.dense() is not None


class TracedPasses:
    """Traced ``ServingPass`` graphs per (rows, retrieved, depth), each checked once
    against the eager pass. ``run`` returns what ``serving_pass`` returns."""

    def __init__(self, model: nn.Module, explain_top: int):
        self.model = model
        self.explain_top = explain_top
        self.graphs: dict[tuple[int, int, int], torch.jit.ScriptModule | None] = {}
        # one trace at a time: the warnings filter it sets is process-wide
        self._tracing = threading.Lock()

    def run(self, batch: Batch, seen: torch.Tensor, retrieved: int, depth: int):
        args = (seen, *batch.tensors())
        key = (len(batch), retrieved, depth)
        if key not in self.graphs:
            with self._tracing:
                if key not in self.graphs:  # another model thread may have just made it
                    return self._first(key, args)
        graph = self.graphs[key]
        if graph is not None:
            try:
                with _as_checked():
                    return graph(*args)
            except RuntimeError:  # a shape the trace fixed that this input does not have
                log.exception(
                    "the traced serving pass for %d rows, %d retrieved, top %d, failed on "
                    "an input its first one did not prepare it for: that shape runs eagerly",
                    *key,
                )
                self.graphs[key] = None
        return serving_pass(self.model, batch, seen, retrieved, depth, self.explain_top)

    def _first(self, key: tuple[int, int, int], args: tuple):
        """Trace this shape, keep the trace if it reproduces the eager pass exactly, and
        answer with the eager pass's own outputs either way."""
        eager = ServingPass(self.model, key[1], key[2], self.explain_top)
        want = eager(*args)
        try:
            with warnings.catch_warnings():
                # the tracer warns about every shape it fixes: fixing them is the point
                warnings.simplefilter("ignore")
                graph = torch.jit.trace(eager, args, check_trace=False)
            with _as_checked():
                got = graph(*args)
            same = len(got) == len(want) and all(map(torch.equal, got, want))
        except Exception:  # a model the tracer cannot follow: eager, as before
            log.exception("tracing the serving pass for %d rows failed; running it eagerly", key[0])
            graph, same = None, False
        if not same and graph is not None:
            log.warning(
                "the traced serving pass for %d rows, %d retrieved, top %d, changed the "
                "answers in the last bits on this machine: that shape runs eagerly",
                *key,
            )
        self.graphs[key] = graph if same else None
        return want
