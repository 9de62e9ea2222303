"""A serving pass (history encoding, retrieval, ranking) as one traced TorchScript graph.

Why: the server's model thread and its event loop share one GIL. Run eagerly, each of
a pass's ~300 torch operations gives the GIL up and waits to get it back, so under load
a pass took about twice its CPU time; a traced graph runs as one call that holds the
GIL once, and skips the Python between operations (a stack of 4 typed histories: 2.7
ms against 3.8 in one process).

A trace is made per (rows, retrieved) shape, the first time it is asked for, and kept
only if it gives the eager pass's outputs bit for bit on that first input; otherwise
that shape runs eagerly from then on. Every branch the pass takes depends on shapes
only (the batch size, the history length, the number retrieved), which a shape's trace
fixes, so one check per shape holds for its later inputs too.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import fields

import torch
from torch import nn

from bstrec.data.batches import Batch
from bstrec.retrieval import retrieve_then_rank

log = logging.getLogger(__name__)

_FIELDS = [f.name for f in fields(Batch)]


class RankPass(nn.Module):
    """(seen, *batch tensors) -> (scores, history mask, tower states, *per-block
    history states, keys and values): ``retrieve_then_rank`` and the ``UserSide`` it
    used, flattened to tensors (what a trace can return)."""

    def __init__(self, model: nn.Module, retrieved: int):
        super().__init__()
        self.model = model
        self.retrieved = retrieved

    def forward(self, seen: torch.Tensor, *tensors: torch.Tensor):
        batch = Batch(**dict(zip(_FIELDS, tensors, strict=True)))
        side = self.model.user_side(batch)
        scores, _ = retrieve_then_rank(self.model, batch, self.retrieved, seen, side)
        return (scores, side.mask, side.states, *[t for layer in side.layers for t in layer])


def traceable(model: nn.Module) -> bool:
    """Models whose serving pass this module knows how to trace: BST with its tower."""
    return getattr(model, "tower", None) is not None and hasattr(model, "encode_history")


class TracedPasses:
    """Traced ``RankPass`` graphs per (rows, retrieved), each checked once against the
    eager pass. ``run`` returns (scores, side) as the eager pass would."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.graphs: dict[tuple[int, int], torch.jit.ScriptModule | None] = {}
        # one trace at a time: the warnings filter it sets is process-wide
        self._tracing = threading.Lock()

    def run(self, batch: Batch, seen: torch.Tensor, retrieved: int):
        args = (seen, *[getattr(batch, n) for n in _FIELDS])
        key = (len(batch), retrieved)
        if key not in self.graphs:
            with self._tracing:
                if key not in self.graphs:  # another model thread may have just made it
                    return self._first(key, args, retrieved)
        graph = self.graphs[key]
        out = graph(*args) if graph is not None else RankPass(self.model, retrieved)(*args)
        return _unpack(out)

    def _first(self, key, args, retrieved: int):
        """Trace this shape, keep the trace if it reproduces the eager pass exactly, and
        answer with the eager pass's own outputs either way."""
        eager = RankPass(self.model, retrieved)
        want = eager(*args)
        try:
            with warnings.catch_warnings():
                # the tracer warns about every shape it fixes: fixing them is the point
                warnings.simplefilter("ignore")
                graph = torch.jit.trace(eager, args, check_trace=False)
            got = graph(*args)
            same = len(got) == len(want) and all(map(torch.equal, got, want))
        except Exception:  # a model the tracer cannot follow: eager, as before
            log.exception("tracing the serving pass for %d rows failed; running it eagerly", key[0])
            graph, same = None, False
        if not same and graph is not None:
            log.warning(
                "the traced serving pass for %d rows, %d retrieved, changed the scores in "
                "the last bits on this machine: that shape runs eagerly",
                *key,
            )
        self.graphs[key] = graph if same else None
        return _unpack(want)


def _unpack(out: tuple):
    """``RankPass``'s flat outputs -> (scores, the ``UserSide`` the reasons read)."""
    from bstrec.models.bst import UserSide

    scores, mask, states, *flat = out
    layers = [tuple(flat[i : i + 3]) for i in range(0, len(flat), 3)]
    return scores, UserSide(layers, mask, states)
