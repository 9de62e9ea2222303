"""One command from data to recommendations: what `bstrec quickstart` runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bstrec.config import RunConfig
from bstrec.data.batches import SequenceStore
from bstrec.data.interactions import Dataset
from bstrec.evaluate import evaluate_ranking
from bstrec.recommend import Recommendations, Recommender
from bstrec.run_dir import load_run
from bstrec.train import make_split, train


@dataclass
class QuickstartResult:
    data: dict
    table: list[dict] = field(default_factory=list)  # protocol R test metrics per model
    run_dir: str = ""
    example: Recommendations | None = None


def quickstart(ds: Dataset, out: Path, minutes: float = 10.0, user=None,
               log: Callable[[str], None] = print, progress: bool = True) -> QuickstartResult:
    from bstrec.data.stats import describe

    result = QuickstartResult(data=describe(ds))
    split = make_split(ds, "leave-one-out")
    test_rows = split.targets("test")
    store = SequenceStore(ds)
    for name in ("popularity", "transitions", "bst"):
        cfg = RunConfig()
        cfg.model.name = name
        cfg.train.max_minutes = minutes
        # a shorter cosine horizon, so the schedule has decayed when the budget ends
        # (about 3 epochs of ml-1m-u2999 fit in 10 minutes on 2 cores)
        cfg.train.epochs = 3
        cfg.train.progress = progress
        log(f"training {name}" + (f" (at most {minutes:g} minutes)" if name == "bst" else ""))
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
