"""The run folder: everything inference needs, and nothing it must rebuild.

```
run/
  config.yaml          resolved RunConfig
  data.json            data set name, source checksums, id maps, titles, vocabularies
  data.safetensors     per-user histories (for "recommend for a known user")
  model.safetensors    best weights and buffers
  model.json           model name, task, catalogue shapes
  metrics.jsonl        one line per evaluation during training
  summary.json         best validation metrics, timings
  curves.png           learning curves
  checkpoint/          training state for --resume (see checkpoint.py)
```
All writes go to a temp file first and are renamed into place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from bstrec.atomic import atomic_save_tensors, atomic_write_text
from bstrec.config import RunConfig
from bstrec.data.interactions import DataError, Dataset
from bstrec.models.base import ScoringModel
from bstrec.models.bst import CatalogFeatures


def write_data_files(run: Path, ds: Dataset, user_feature_names: list[str]) -> None:
    meta = {
        "name": ds.name,
        "checksum": ds.checksum,
        "sources": ds.sources,
        "user_ids": ds.user_ids.tolist(),
        "item_ids": ds.item_ids.tolist(),
        "item_titles": ds.item_titles.tolist(),
        "item_year": ds.item_year.tolist(),
        "genre_names": ds.genre_names,
        "item_genres": [np.flatnonzero(row).tolist() for row in ds.item_genres],
        "user_feature_names": user_feature_names,
        "user_vocab": {n: ds.user_vocab[n] for n in user_feature_names},
        "unrated_items": ds.unrated_items,
    }
    atomic_write_text(run / "data.json", json.dumps(meta))
    feats = (
        np.stack([ds.user_features[n] for n in user_feature_names], 1)
        if user_feature_names
        else np.zeros((ds.n_users, 0))
    )
    atomic_save_tensors(
        run / "data.safetensors",
        {
            "user_offsets": torch.from_numpy(ds.user_offsets.astype(np.int64)),
            "item": torch.from_numpy(ds.item.astype(np.int32)),
            "rating": torch.from_numpy(ds.rating.astype(np.float32)),
            "timestamp": torch.from_numpy(ds.timestamp.astype(np.int64)),
            "user_features": torch.from_numpy(feats.astype(np.int32)),
        },
    )


def dataset_from_run(run: Path) -> Dataset:
    """The Dataset as saved in a run folder (histories, ids, titles), no source files."""
    meta = _read_json(run / "data.json")
    arrays = load_file(str(run / "data.safetensors"))
    offsets = arrays["user_offsets"].numpy()
    n_users = len(offsets) - 1
    genres = np.zeros((len(meta["item_ids"]), len(meta["genre_names"])), dtype=bool)
    for i, gs in enumerate(meta["item_genres"]):
        genres[i, gs] = True
    feats = arrays["user_features"].numpy()
    names = meta["user_feature_names"]
    return Dataset(
        name=meta["name"],
        user_ids=np.asarray(meta["user_ids"]),
        item_ids=np.asarray(meta["item_ids"]),
        user=np.repeat(np.arange(n_users, dtype=np.int32), np.diff(offsets)),
        item=arrays["item"].numpy(),
        rating=arrays["rating"].numpy(),
        timestamp=arrays["timestamp"].numpy(),
        user_offsets=offsets,
        item_titles=np.asarray(meta["item_titles"], dtype=str),
        item_year=np.asarray(meta["item_year"], dtype=np.int32),
        item_genres=genres,
        genre_names=meta["genre_names"],
        user_features={n: feats[:, i] for i, n in enumerate(names)},
        user_vocab=meta["user_vocab"],
        unrated_items=meta.get("unrated_items", {}),
        checksum=meta["checksum"],
        sources=meta["sources"],
    )


def save_model(
    run: Path, model: ScoringModel, cfg: RunConfig, cat: CatalogFeatures, name: str = "model"
) -> None:
    atomic_save_tensors(run / f"{name}.safetensors", dict(model.state_dict()))
    atomic_write_text(
        run / f"{name}.json",
        json.dumps(
            {
                "model": cfg.model.name,
                "task": cfg.model.task,
                "n_items": cat.n_items,
                "n_users": cat.n_users,
                "n_genres": int(cat.item_genres.shape[1]),
                "user_vocab_sizes": cat.user_vocab_sizes,
            }
        ),
    )


@dataclass
class LoadedRun:
    path: Path
    config: RunConfig
    model: ScoringModel
    dataset: Dataset  # histories and metadata as saved in the run
    user_feature_names: list[str]


def load_run(run: Path | str) -> LoadedRun:
    """Load a trained run for inference from its folder alone."""
    from bstrec.models.factory import build_model

    run = Path(run)
    if not (run / "model.safetensors").is_file():
        raise DataError(f"{run}: not a run folder (no model.safetensors); train one first")
    cfg = RunConfig.load(run / "config.yaml")
    meta = _read_json(run / "model.json")
    ds = dataset_from_run(run)
    names = _read_json(run / "data.json")["user_feature_names"]
    cat = CatalogFeatures(
        n_items=meta["n_items"],
        n_users=meta["n_users"],
        item_genres=torch.from_numpy(ds.item_genres.astype(np.float32)),
        item_year=torch.from_numpy(ds.item_year.astype(np.int64)),
        user_vocab_sizes=meta["user_vocab_sizes"],
    )
    model = build_model(cfg, cat)
    try:
        state = load_file(str(run / "model.safetensors"))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise DataError(f"{run / 'model.safetensors'}: cannot read weights: {e}") from None
    model.load_state_dict(state)
    model.eval()
    return LoadedRun(run, cfg, model, ds, names)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing; is this a complete run folder?") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
