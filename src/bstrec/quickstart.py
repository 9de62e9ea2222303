"""One command from data to recommendations: what `bstrec quickstart` runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bstrec.config import RunConfig
from bstrec.data.batches import SequenceStore
from bstrec.data.interactions import Dataset
from bstrec.data.splits import make_split
from bstrec.evaluate import evaluate_ranking
from bstrec.recommend import Recommendations, Recommender
from bstrec.run_dir import load_run
from bstrec.train import train


@dataclass
class QuickstartResult:
    data: dict
    table: list[dict] = field(default_factory=list)  # protocol R test metrics per model
    run_dir: str = ""
    example: Recommendations | None = None


PEERS = ("popularity", "itemknn", "ease", "cooccurrence")
# BST's fixed work in the quickstart: 8 epochs (one window of max_len rows per target
# row), validated at 4 and 8, sized to finish within 10 minutes on an idle 2-core machine
# for ml-1m-u2999 (README, Quickstart)
QUICKSTART_EPOCHS = 8


def quickstart(ds: Dataset, out: Path, epochs: int | None = None, user=None,
               log: Callable[[str], None] = print, progress: bool = True) -> QuickstartResult:
    """Describe, fit the peers, train BST for a fixed number of epochs
    (``QUICKSTART_EPOCHS`` unless ``epochs`` is given), compare on test, recommend.

    Fixed work, not a time budget: the table does not depend on how busy the machine is.
    """
    from bstrec.data.stats import describe

    result = QuickstartResult(data=describe(ds))
    split = make_split(ds, "leave-one-out")
    test_rows = split.targets("test")
    store = SequenceStore(ds)
    for name in (*PEERS, "bst"):
        cfg = RunConfig()
        cfg.model.name = name
        if name == "bst":
            cfg.train.epochs = epochs or QUICKSTART_EPOCHS
            cfg.train.eval_every = max(1.0, cfg.train.epochs / 2)
        cfg.resolve()
        cfg.train.progress = progress
        if name == "ease" and ds.n_items > 20000:
            log(f"skipping ease: {ds.n_items:,} movies is above its dense limit")
            continue
        log(f"training {name}" + (f" ({cfg.train.epochs} epochs)" if name == "bst" else ""))
        res = train(cfg, ds, out / name, log=log)
        run = load_run(out / name)  # the checkpoint chosen on validation
        m = evaluate_ranking(run.model, SequenceStore(ds, run.user_feature_names), test_rows,
                             cfg.data.max_len)
        result.table.append({"model": name, **m, "train_seconds": res.train_seconds})
    del store
    result.run_dir = str(out / "bst")
    rec = Recommender(load_run(out / "bst"))
    who = user if user is not None else ds.user_ids[0].item()
    result.example = rec.for_user(who, 10)
    return result
