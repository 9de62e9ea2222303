"""What a run reports: metrics.jsonl, summary.json, curves.png and the progress bar."""

from __future__ import annotations

import json
from pathlib import Path

from bstrec.config import RunConfig
from bstrec.data.interactions import Dataset
from bstrec.run_dir import atomic_write_text
from bstrec.training.state import TrainResult


def describe(rec: dict, improved: bool) -> str:
    keys = ("NDCG@10", "HR@10") if "NDCG@10" in rec else ("RMSE", "MAE")
    vals = " ".join(f"{k} {rec[k]:.4f}" for k in keys)
    return (
        f"epoch {rec['epoch']} step {rec['step']}: loss {rec['train_loss']:.4f} "
        f"val {vals} ({rec['train_seconds']:.0f}s){' *' if improved else ''}"
    )


def append_jsonl(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def write_summary(out: Path, cfg: RunConfig, ds: Dataset, result: TrainResult) -> None:
    summary = {
        "model": cfg.model.name,
        "task": cfg.model.task,
        "data": ds.name,
        "data_checksum": ds.checksum,
        "best_val": result.best,
        "train_seconds": result.train_seconds,
        "setup_seconds": result.setup_seconds,
        "evaluations": len(result.history),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))


def plot_curves(out: Path, history: list[dict]) -> None:
    if not history:
        return
    # A Figure without pyplot draws to a file with no backend: matplotlib.use("Agg")
    # would switch the backend of a notebook that calls bstrec.fit, and its own plots
    # would stop showing.
    from matplotlib.figure import Figure

    x = [h["fraction"] if "fraction" in h else h["epoch"] for h in history]
    key = "NDCG@10" if "NDCG@10" in history[0] else "RMSE"
    fig = Figure(figsize=(9, 3.5))
    ax = fig.subplots(1, 2)
    ax[0].plot(x, [h["train_loss"] for h in history], marker="o")
    ax[0].set(xlabel="epoch", ylabel="training loss")
    ax[1].plot(x, [h[key] for h in history], marker="o", color="C1")
    ax[1].set(xlabel="epoch", ylabel=f"validation {key}")
    fig.tight_layout()
    tmp = out / ".curves.tmp.png"
    fig.savefig(tmp, dpi=80)
    tmp.replace(out / "curves.png")


def progress_bar(enabled: bool, total: int, initial: int = 0):
    if not enabled:
        # plain tqdm: importing tqdm.auto warns in a notebook without ipywidgets, even
        # for a bar that is never shown
        from tqdm import tqdm
    else:
        from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", leave=False)
