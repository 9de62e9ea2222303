"""One command from data to recommendations: what `bstrec quickstart` runs, on the
public API (``fit``, ``Run.evaluate``, ``Run.recommend``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bstrec.api import describe, fit
from bstrec.config import RunConfig
from bstrec.data.interactions import Dataset
from bstrec.results import Recommendations


@dataclass
class QuickstartResult:
    data: dict
    table: list[dict] = field(default_factory=list)  # protocol R test metrics per model
    run_dir: str = ""
    example: Recommendations | None = None


PEERS = ("popularity", "itemknn", "ease", "cooccurrence")
# BST's fixed work in the quickstart: the first 12 epochs of the default 20-epoch
# schedule (one window of max_len rows per target row), validated at 6 and 12: the
# default run's own best checkpoint on ml-1m-u2999 (its validation peaks at epoch 12),
# sized to finish within 10 minutes on an idle 2-core machine (README, Quickstart)
QUICKSTART_EPOCHS = 12


def quickstart(
    ds: Dataset,
    out: Path,
    epochs: int | None = None,
    user=None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> QuickstartResult:
    """Describe, fit the peers, train BST for a fixed number of epochs
    (``QUICKSTART_EPOCHS`` unless ``epochs`` is given), compare on test, recommend.

    Fixed work, not a time budget: the table does not depend on how busy the machine is.
    """
    result = QuickstartResult(data=describe(ds))
    bst = None
    for name in (*PEERS, "bst"):
        cfg = RunConfig()
        cfg.model.name = name
        cfg.data.split = "leave-one-out"
        cfg.resolve()
        if name == "bst":
            cfg.train.stop_after_epochs = epochs or QUICKSTART_EPOCHS
            cfg.train.eval_every = max(1.0, cfg.train.stop_after_epochs / 2)
        cfg.train.progress = progress
        if name == "ease" and ds.n_items > 20000:
            log(f"skipping ease: {ds.n_items:,} movies is above its dense limit")
            continue
        n = cfg.train.stop_after_epochs
        log(f"training {name}" + (f" ({n} of {cfg.train.epochs} epochs)" if name == "bst" else ""))
        run = fit(ds, out=out / name, config=cfg, log=log)
        m = run.evaluate("test")  # the checkpoint chosen on validation; protocol R
        m = {k: v for k, v in m.items() if k not in ("model", "task", "data", "split")}
        result.table.append({"model": name, **m, "train_seconds": run.summary["train_seconds"]})
        bst = run
    result.run_dir = str(out / "bst")
    who = user if user is not None else ds.user_ids[0].item()
    result.example = bst.recommend(user=who, k=10)
    return result
