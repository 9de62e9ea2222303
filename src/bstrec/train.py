"""The training loop: epochs, validation, early stopping, checkpoints, resume.

Every training row with at least one earlier training row is a target whose history
is the L rows before it (no random windows). Ranking uses sampled negatives; rating
uses MSE on stars. Validation (protocol R or T on the validation targets) picks the
best epoch; the test targets are never touched here.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bstrec.config import RunConfig
from bstrec.data.batches import SequenceStore, training_rows
from bstrec.data.interactions import Dataset
from bstrec.data.splits import Split, leave_one_out, time_cutoff
from bstrec.evaluate import evaluate_ranking, evaluate_rating
from bstrec.models.base import Recommender
from bstrec.models.factory import build_model, catalog_features, fit_baseline, task_of
from bstrec.run_dir import atomic_write_text, save_model, write_data_files
from bstrec.sampling import NegativeSampler, training_loss


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad resume state)."""


def make_split(ds: Dataset, name: str) -> Split:
    if name == "leave-one-out":
        return leave_one_out(ds)
    if name == "time-cutoff":
        return time_cutoff(ds)
    raise ValueError(f"data.split must be leave-one-out or time-cutoff, not {name!r}")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def validate(model: Recommender, store: SequenceStore, split: Split, max_len: int,
             which: str = "val", device="cpu") -> dict:
    rows = split.targets(which)
    if model.task == "rating":
        return evaluate_rating(model, store, rows, max_len, device=device)
    return evaluate_ranking(model, store, rows, max_len, device=device)


def primary(metrics: dict) -> float:
    """Higher is better: NDCG@10 for ranking, -RMSE for rating."""
    return metrics["NDCG@10"] if "NDCG@10" in metrics else -metrics["RMSE"]


@dataclass
class TrainResult:
    run_dir: Path
    model: Recommender
    best: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0


def train(cfg: RunConfig, ds: Dataset, out: Path, log=print) -> TrainResult:
    """Train (or fit) the configured model on ``ds`` into run folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.model.task = task_of(cfg.model.name, cfg.model.task)
    if cfg.model.task == "rating" and not ds.has_ratings:
        raise ValueError(f"task rating needs ratings; data set {ds.name} has none")
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    split = make_split(ds, cfg.data.split)
    store = SequenceStore(ds)
    names = store.user_feature_names if cfg.model.use_user_features else []
    store = SequenceStore(ds, names)
    cat = catalog_features(ds, names)
    cfg.save(out / "config.yaml")
    write_data_files(out, ds, names)
    train_part = split.train_rows(ds.user_offsets)
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)

    t_start = time.perf_counter()
    if cfg.model.name != "bst":
        model = fit_baseline(cfg, ds, train_part)
        m = validate(model, store, split, cfg.data.max_len)
        rec = {"epoch": 0, "split": "val", **m, "train_seconds": time.perf_counter() - t_start}
        _append_jsonl(metrics_path, rec)
        save_model(out, model, cfg, cat)
        result = TrainResult(out, model, rec, [rec], rec["train_seconds"])
        _write_summary(out, cfg, ds, result)
        return result

    model = build_model(cfg, cat).to(device)
    rows = training_rows(ds, split.train_end)
    if len(rows) == 0:
        raise ValueError(f"data set {ds.name}: no training examples (users need >= 4 rows)")
    gen = torch.Generator().manual_seed(cfg.train.seed)
    counts = np.bincount(ds.item[train_part], minlength=ds.n_items)
    sampler = NegativeSampler(cfg.train.sampler, ds.n_items, counts, gen)
    opt = _optimizer(cfg, model)
    bs = cfg.train.batch_size
    steps_per_epoch = math.ceil(len(rows) / bs)
    eval_steps = max(1, int(round(cfg.train.eval_every * steps_per_epoch)))
    history: list[dict] = []
    best_score, best, bad_evals = -math.inf, {}, 0
    progress = _progress(cfg.train.progress, total=steps_per_epoch * cfg.train.epochs)
    step, trained_targets, stop = 0, 0, False
    train_time = 0.0
    for epoch in range(cfg.train.epochs):
        perm = torch.from_numpy(rows)[torch.randperm(len(rows), generator=gen)]
        model.train()
        loss_sum, loss_n = 0.0, 0
        t_epoch = time.perf_counter()
        for s in range(0, len(perm), bs):
            batch = store.batch_for_targets(perm[s : s + bs], cfg.data.max_len).to(device)
            loss = training_loss(model, batch, cfg, sampler, device)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"non-finite loss {loss.item()} at epoch {epoch} step {step}; "
                    f"the best checkpoint so far is kept in {out} (try a lower train.lr)"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            trained_targets += len(batch)
            loss_sum += loss.item() * len(batch)
            loss_n += len(batch)
            progress.update(1)
            progress.set_postfix(loss=f"{loss_sum / loss_n:.4f}", epoch=epoch)
            elapsed = train_time + time.perf_counter() - t_epoch
            over_time = cfg.train.max_minutes > 0 and elapsed > 60 * cfg.train.max_minutes
            if step % eval_steps == 0 or over_time or s + bs >= len(perm):
                train_time += time.perf_counter() - t_epoch
                m = validate(model, store, split, cfg.data.max_len, device=device)
                rec = {"epoch": epoch, "step": step, "fraction": step / steps_per_epoch,
                       "split": "val", "train_loss": loss_sum / max(loss_n, 1), **m,
                       "train_seconds": train_time, "targets_per_second":
                       trained_targets / max(train_time, 1e-9)}
                history.append(rec)
                _append_jsonl(metrics_path, rec)
                score = primary(m)
                improved = score > best_score
                if improved:
                    best_score, best, bad_evals = score, rec, 0
                    save_model(out, model, cfg, cat)
                else:
                    bad_evals += 1
                log(_describe(rec, improved))
                model.train()
                t_epoch = time.perf_counter()
                if bad_evals >= cfg.train.patience or over_time:
                    stop = True
                    break
        if stop:
            break
    progress.close()
    result = TrainResult(out, model, best, history, train_time)
    _write_summary(out, cfg, ds, result)
    _plot_curves(out, history)
    return result


def _optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adagrad":
        return torch.optim.Adagrad(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    raise ValueError(f"train.optimizer must be adamw or adagrad, not {t.optimizer!r}")


def _describe(rec: dict, improved: bool) -> str:
    keys = ("NDCG@10", "HR@10") if "NDCG@10" in rec else ("RMSE", "MAE")
    vals = " ".join(f"{k} {rec[k]:.4f}" for k in keys)
    return (f"epoch {rec['epoch']} step {rec['step']}: loss {rec['train_loss']:.4f} "
            f"val {vals} ({rec['train_seconds']:.0f}s){' *' if improved else ''}")


def _append_jsonl(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _write_summary(out: Path, cfg: RunConfig, ds: Dataset, result: TrainResult) -> None:
    summary = {
        "model": cfg.model.name,
        "task": cfg.model.task,
        "data": ds.name,
        "data_checksum": ds.checksum,
        "best_val": result.best,
        "train_seconds": result.train_seconds,
        "evaluations": len(result.history),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))


def _plot_curves(out: Path, history: list[dict]) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [h["fraction"] if "fraction" in h else h["epoch"] for h in history]
    key = "NDCG@10" if "NDCG@10" in history[0] else "RMSE"
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(x, [h["train_loss"] for h in history], marker="o")
    ax[0].set(xlabel="epoch", ylabel="training loss")
    ax[1].plot(x, [h[key] for h in history], marker="o", color="C1")
    ax[1].set(xlabel="epoch", ylabel=f"validation {key}")
    fig.tight_layout()
    tmp = out / ".curves.tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(out / "curves.png")


def _progress(enabled: bool, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="step", leave=False)
