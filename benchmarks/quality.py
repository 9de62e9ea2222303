"""Quality benchmark: BST and the baselines under protocols R, T and S.

Prints one JSON line per model with its test metrics (read once, at the end of each
model's training; model selection uses validation only), training and evaluation time.

    python benchmarks/quality.py --data ../shared/data/ml-1m-u2999 --out runs/bench

Protocols are defined in ../shared/PROTOCOL.md. S is the reference notebook's leaky
random-window split, reported only to compare like with like against the notebook.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from common import DEFAULT_DATA, emit  # benchmarks/common.py (the script's folder)

from bstrec import load_dataset
from bstrec.config import RunConfig
from bstrec.data.batches import SequenceStore
from bstrec.data.splits import make_split, seed_windows
from bstrec.evaluate import evaluate_ranking, evaluate_rating
from bstrec.models.factory import build_model, catalog_features
from bstrec.train import train

RATING_PEERS = ("global-mean", "user-mean", "bias", "factors")


def peers(
    ds, split, out: Path, which: list[str], sasrec_minutes: float, sasrec_epochs: int = 20
) -> None:
    """Fit (or train) each peer through the same trainer as BST, then read test once."""
    from bstrec.run_dir import load_run

    for name in which:
        cfg = RunConfig()
        cfg.model.name = name
        cfg.train.progress = False
        if name == "sasrec":  # the default BST run's wall-clock budget and schedule
            cfg.train.max_minutes = sasrec_minutes
            cfg.train.epochs = sasrec_epochs
        res = train(cfg, ds, out / name, log=lambda m: print(m, file=sys.stderr))
        run = load_run(out / name)  # the checkpoint chosen on validation
        store = SequenceStore(ds, run.user_feature_names)
        rows = split.targets("test")
        max_len = run.config.data.max_len
        if run.model.task == "rating":
            m = evaluate_rating(run.model, store, rows, max_len)
        else:
            m = evaluate_ranking(run.model, store, rows, max_len)
        tuned = {}
        if (out / name / "tuning.jsonl").exists():
            trials = [json.loads(x) for x in (out / name / "tuning.jsonl").read_text().splitlines()]
            if "RMSE" in trials[0]:  # rating peers: the lowest validation RMSE
                tuned = {"tuned": min(trials, key=lambda t: t["RMSE"])}
            else:
                tuned = {"tuned": max(trials, key=lambda t: t.get("val_NDCG@10", -1))}
        emit(
            {
                "model": name,
                "split": "test",
                **m,
                "train_seconds": res.train_seconds,
                "best_val": res.best.get("NDCG@10", res.best.get("RMSE")),
                **tuned,
            }
        )


def bst(
    ds,
    split,
    store,
    task: str,
    minutes: float,
    out: Path,
    sets: list[str],
    existing: Path | None = None,
) -> None:
    """Train BST (or take a finished run folder), then read its test metrics once."""
    from bstrec.run_dir import load_run

    if existing is None:
        cfg = RunConfig()
        cfg.model.task = task
        cfg.train.progress = False
        cfg.train.max_minutes = minutes
        cfg.override(sets)
        run_dir = out / f"bst-{task}"
        train(cfg, ds, run_dir, log=lambda m: print(m, file=sys.stderr))
    else:
        run_dir = existing
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary["data_checksum"] != ds.checksum:
        raise SystemExit(f"{run_dir} was trained on other data ({summary['data_checksum']})")
    run = load_run(run_dir)  # the checkpoint chosen on validation
    cfg = run.config
    rows = split.targets("test")
    if task == "rating":
        m = evaluate_rating(run.model, store, rows, cfg.data.max_len)
    else:
        m = evaluate_ranking(run.model, store, rows, cfg.data.max_len)
    best = summary["best_val"]
    emit(
        {
            "model": f"bst-{task}",
            "split": "test",
            **m,
            "run_dir": str(run_dir),
            "train_seconds": summary["train_seconds"],
            "best_val": {
                k: best.get(k)
                for k in ("NDCG@10", "HR@10", "RMSE", "MAE", "epoch", "step", "train_seconds")
            },
            "config": cfg.to_dict(),
        }
    )


def protocol_s(ds, minutes: float, sets: list[str]) -> None:
    """The notebook's task and split: predict the 4th rating of a window from the first 3."""
    ws = seed_windows(ds)
    cfg = RunConfig()
    cfg.model.task = "rating"
    cfg.data.max_len = 3
    cfg.override(sets)
    torch.manual_seed(cfg.train.seed)
    store = SequenceStore(ds)
    model = build_model(cfg, catalog_features(ds, store.user_feature_names))
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
    )
    tr_target = torch.from_numpy(ws.train_windows[:, 3])
    tr_start = torch.from_numpy(ws.train_windows[:, 0])
    gen = torch.Generator().manual_seed(cfg.train.seed)
    t0 = time.perf_counter()
    bs, epochs = cfg.train.batch_size, 0
    # fixed budget, no model selection: S has no validation part, as in the notebook
    while time.perf_counter() - t0 < 60 * minutes:
        model.train()
        perm = torch.randperm(len(tr_target), generator=gen)
        for s in range(0, len(perm), bs):
            idx = perm[s : s + bs]
            batch = store.batch_for_targets(tr_target[idx], 3, hist_limit=tr_start[idx])
            loss = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        epochs += 1
    train_s = time.perf_counter() - t0
    m = evaluate_rating(
        model, store, ws.test_windows[:, 3], 3, hist_limit=ws.test_windows[:, 0], protocol="S"
    )
    emit(
        {
            "model": "bst-rating",
            "split": "S-test (leaky, notebook comparison only)",
            **m,
            "train_seconds": train_s,
            "epochs": epochs,
            "train_windows": int(len(ws.train_windows)),
        }
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--only", nargs="*", default=["baselines", "sasrec", "ranking", "rating", "S"])
    p.add_argument(
        "--ranking-minutes",
        type=float,
        default=0.0,
        help="BST time limit (0: the default epochs); also SASRec's budget",
    )
    p.add_argument(
        "--sasrec-minutes",
        type=float,
        default=10.0,
        help="SASRec's training time: the default BST run's (idle, 2 cores)",
    )
    p.add_argument(
        "--sasrec-epochs",
        type=int,
        default=20,
        help="the horizon of SASRec's cosine: BST's default",
    )
    p.add_argument(
        "--rating-minutes",
        type=float,
        default=0.0,
        help="rating BST time limit (0: the default epochs)",
    )
    p.add_argument("--s-minutes", type=float, default=3.0)
    p.add_argument("--set", action="append", default=[], help="config override for BST")
    p.add_argument("--ranking-run", type=Path, help="evaluate this finished run, don't train")
    p.add_argument("--rating-run", type=Path, help="evaluate this finished run, don't train")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not data.exists():
        print(f"skipped: data not found at {data} (needs ../shared/data/ml-1m-u2999)")
        return 0
    emit(
        {
            "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "data": str(data),
        }
    )
    ds = load_dataset(data)
    split = make_split(ds, "leave-one-out")
    store = SequenceStore(ds)
    out = Path(args.out)
    if "baselines" in args.only:
        peers(
            ds,
            split,
            out,
            ["popularity", "itemknn", "ease", "cooccurrence", *RATING_PEERS],
            0.0,
        )
    elif "rating-peers" in args.only:  # the rating task's peers alone (closed form, seconds)
        peers(ds, split, out, list(RATING_PEERS), 0.0)
    if "sasrec" in args.only:
        peers(ds, split, out, ["sasrec"], args.sasrec_minutes, args.sasrec_epochs)
    if "ranking" in args.only:
        bst(ds, split, store, "ranking", args.ranking_minutes, out, args.set, args.ranking_run)
    if "rating" in args.only:
        bst(ds, split, store, "rating", args.rating_minutes, out, args.set, args.rating_run)
    if "S" in args.only:
        protocol_s(ds, args.s_minutes, args.set)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
