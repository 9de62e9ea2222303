"""ONNX export of a run's full-catalogue scorer, with a JSON sidecar and a parity check.

The graph takes a batch of histories as integer tokens and returns a score for every
movie of the catalogue:

    hist_item   (B, L) int64  movie tokens, newest last, left-padded with 0
    hist_rating (B, L) int64  rating tokens round(2 * stars), 0 = none or padding
    hist_gap    (B, L) int64  time-gap tokens (sidecar: gap_thresholds_seconds)
    user_feats  (B, F) int64  user feature codes, 0 = unknown (only if F > 0)
    user        (B,)   int64  user token (only for models with model.use_user_id)
    -> scores   (B, n_items) float32, column j = movie item_ids[j]

Everything a service needs to build these tokens without Python or bstrec (movie ids
in column order, user feature vocabularies, the gap buckets as integer thresholds)
goes in the sidecar ``<out>.json``. The gap bucket is a float log in PyTorch; as
thresholds it is exact integer comparisons in any language.

Export runs ``torch.onnx.export`` (the torch.export-based exporter) on a plain module
around the model's cached full-catalogue scoring (``score_all`` after
``freeze_catalog``). The one part torch.export cannot trace is the sparse wide part of
catalogues too large for a dense pair matrix (a scatter whose size depends on the
data): the export swaps in a gather over rows padded to the longest row, which
computes the same sums with fixed shapes. Before anything is written in place,
ONNX Runtime must reproduce PyTorch's scores within ``tolerance`` on known users and on
short and empty histories; the figure goes into the sidecar.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bstrec.atomic import atomic_write_text
from bstrec.data.batches import Batch, SequenceStore, gap_thresholds, history_batch
from bstrec.models.item_pairs import DENSE_MAX_ITEMS, ItemPairs
from bstrec.run_dir import LoadedRun
from bstrec.values import plain

TOLERANCE = 1e-4  # largest |ONNX Runtime - PyTorch| score difference accepted
SIDECAR_VERSION = 1


class ExportError(RuntimeError):
    """The export cannot be made, or its scores do not match PyTorch's."""


@dataclass(frozen=True)
class OnnxExport:
    """What ``export_onnx`` wrote and how closely it matches PyTorch."""

    path: Path
    sidecar: Path
    max_abs_diff: float | None  # over the parity rows; None when not checked
    parity_rows: int
    export_seconds: float
    size_bytes: int


class _PaddedRows(ItemPairs):
    """An ``ItemPairs`` whose full-catalogue rows are read by a fixed-shape gather.

    Each of the history's rows is read as ``width`` (the longest row's length)
    consecutive entries from its start, the ones past its end weighted 0, and
    scatter-added into the output: the sums of ``ItemPairs.weighted_rows`` without
    its data-dependent ``repeat_interleave``. Costs B * n * width per call.
    """

    @classmethod
    def from_pairs(cls, pairs: ItemPairs) -> _PaddedRows:
        new = cls(pairs.n_items)
        new.keys, new.values, new.row_ptr = pairs.keys, pairs.values, pairs.row_ptr
        new.width = max(1, int((pairs.row_ptr[1:] - pairs.row_ptr[:-1]).max()))
        return new

    def dense(self):
        return None

    def weighted_rows(self, last: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, n = last.shape
        flat = last.reshape(-1)  # (B*n,)
        start = self.row_ptr[flat]
        length = self.row_ptr[flat + 1] - start
        step = torch.arange(self.width, device=last.device)
        valid = step[None, :] < length[:, None]  # (B*n, width)
        pos = (start[:, None] + step[None, :]).clamp(max=max(len(self.keys) - 1, 0))
        if len(self.keys) == 0:
            return torch.zeros(b, self.size, device=last.device)
        cols = torch.where(valid, self.keys[pos] - flat[:, None] * self.size, 0)
        vals = torch.where(valid, self.values[pos] * w.reshape(-1)[:, None], 0.0)
        out = torch.zeros(b, self.size, device=last.device, dtype=vals.dtype)
        return out.scatter_add(1, cols.reshape(b, n * self.width), vals.reshape(b, n * self.width))


class CatalogueScorer(nn.Module):
    """Token tensors in, ``score_all`` out: the module that is exported.

    Works on a copy of the model (eval mode, catalogue frozen, caches warmed), so the
    caller's model is untouched.
    """

    def __init__(self, model: nn.Module, n_user_feats: int, use_user_id: bool):
        super().__init__()
        model = copy.deepcopy(model).eval()
        for name, sub in list(model.named_modules()):
            if isinstance(sub, ItemPairs) and sub.n_items > DENSE_MAX_ITEMS:
                parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
                setattr(parent, name.rpartition(".")[2], _PaddedRows.from_pairs(sub))
        if hasattr(model, "freeze_catalog"):
            model.freeze_catalog()
        self.model = model
        self.n_user_feats, self.use_user_id = n_user_feats, use_user_id

    def input_names(self) -> list[str]:
        names = ["hist_item", "hist_rating", "hist_gap"]
        if self.n_user_feats:
            names.append("user_feats")
        if self.use_user_id:
            names.append("user")
        return names

    def forward(self, hist_item, hist_rating, hist_gap, *rest):
        b = hist_item.shape[0]
        rest = list(rest)
        feats = rest.pop(0) if self.n_user_feats else hist_item.new_zeros(b, 0)
        user = rest.pop(0) if self.use_user_id else hist_item.new_zeros(b)
        zeros = hist_item.new_zeros(b)
        batch = Batch(
            user=user,
            user_feats=feats,
            hist_item=hist_item,
            hist_rating=hist_rating,
            hist_gap=hist_gap,
            target=zeros,
            label=zeros.float(),
            time=zeros,
        )
        return self.model.score_all(batch)

    def inputs_of(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        args = [batch.hist_item, batch.hist_rating, batch.hist_gap]
        if self.n_user_feats:
            args.append(batch.user_feats)
        if self.use_user_id:
            args.append(batch.user)
        return tuple(a.to(torch.int64) for a in args)


def parity_batches(run: LoadedRun, users: int = 24) -> list[Batch]:
    """Known users (a seeded sample, whole histories) plus typed-in histories of 1 and
    2 movies and an all-padding one, with and without user features."""
    ds, max_len = run.dataset, run.config.data.max_len
    store = SequenceStore(ds, run.user_feature_names)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(ds.n_users, min(users, ds.n_users), replace=False))
    out = [store.batch_for_users(torch.from_numpy(pick), max_len)]
    n_feats = len(run.user_feature_names)
    # the first real value of each vocabulary (index 0 is "unknown")
    feats = [min(1, len(ds.user_vocab[n]) - 1) for n in run.user_feature_names]
    for toks, codes in (([1], None), ([2, 3], feats), ([], None)):
        toks = [t for t in toks if t <= ds.n_items]
        out.append(history_batch(toks, max_len, n_feats, user_feats=codes))
    return out


def export_onnx(
    run: LoadedRun,
    out: Path,
    *,
    check: bool = True,
    tolerance: float = TOLERANCE,
    opset: int | None = None,
) -> OnnxExport:
    """Write ``out`` (the ONNX graph) and ``out``.json (its input spec), after checking
    ONNX Runtime's scores against PyTorch's (``check``); nothing is written in place
    when the export or the check fails. ExportError says why."""
    _require("onnx", "onnxscript")
    if check:
        _require("onnxruntime")
    cfg = run.config
    scorer = CatalogueScorer(run.model, len(run.user_feature_names), cfg.model.use_user_id)
    batches = parity_batches(run)
    model = run.model.eval()
    with torch.no_grad():
        # the reference is the run's own model, not the exported copy: a wrong swap of
        # the wide part would fail here
        expected = [model.score_all(b) for b in batches]
        for b in batches:  # warm the copy's caches (cached params, dense pair matrix)
            scorer(*scorer.inputs_of(b))
    example = scorer.inputs_of(batches[0])
    batch_dim = torch.export.Dim("batch", min=1, max=1 << 20)
    names = scorer.input_names()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    t0 = time.perf_counter()
    try:
        _export(scorer, example, tmp, names, batch_dim, opset)
        seconds = time.perf_counter() - t0
        _check_batch_axis(tmp, cfg.model.name)
        diff = None
        if check:
            diff = _max_diff(tmp, names, [scorer.inputs_of(b) for b in batches], expected)
            if not diff <= tolerance:
                raise ExportError(
                    f"ONNX Runtime's scores differ from PyTorch's by up to "
                    f"{diff:.3g} (tolerance {tolerance:g}); nothing written"
                )
        rows = sum(len(b) for b in batches) if check else 0
        result = OnnxExport(
            out, out.with_name(out.name + ".json"), diff, rows, seconds, tmp.stat().st_size
        )
        sidecar = sidecar_spec(run, tmp, result, tolerance)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
        atomic_write_text(result.sidecar, json.dumps(sidecar, indent=1))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


def _export(scorer, example, path: Path, names, batch_dim, opset) -> None:
    # The exporter prints its progress to stdout and warns about things that do not
    # concern this graph (torchvision ops, deprecations): keep stdout clean for --json.
    import logging

    quiet = io.StringIO()
    level = logging.getLogger("torch.onnx").level
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                scorer,
                example,
                str(path),
                dynamo=True,
                verbose=False,
                input_names=names,
                output_names=["scores"],
                dynamic_shapes=_dynamic_batch(len(names), batch_dim),
                external_data=False,
                opset_version=opset,
            )
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed: {_summary(e)}") from e
    finally:
        logging.getLogger("torch.onnx").setLevel(level)


def _dynamic_batch(n_inputs: int, dim) -> tuple:
    """Axis 0 of every input is the batch: three named inputs, then ``*rest``'s."""
    return ({0: dim}, {0: dim}, {0: dim}, tuple({0: dim} for _ in range(n_inputs - 3)))


def _summary(e: Exception) -> str:
    """The exporter's own one-line cause, not its page of generic advice."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if "## Exception summary" in lines:
        after = lines[lines.index("## Exception summary") + 1 :]
        if after:
            return after[0]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _check_batch_axis(path: Path, model_name: str) -> None:
    """Every input's first axis must stay symbolic. torch.export fixes it to the example's
    size when the model reads the batch size as a Python int (``len(batch)``, as some
    baselines do): the graph would then score only batches of exactly that size."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    fixed = [v.name for v in graph.input if not v.type.tensor_type.shape.dim[0].dim_param]
    if fixed:
        raise ExportError(
            f"model {model_name}: the exported graph fixes the batch size of "
            f"{', '.join(fixed)} (its scoring reads the batch size as a "
            "number); BST and SASRec export with any batch size"
        )


def _max_diff(path: Path, names, inputs, expected) -> float:
    try:
        return _max_diff_unchecked(path, names, inputs, expected)
    except ExportError:
        raise
    except Exception as e:  # onnxruntime's own error types
        raise ExportError(f"ONNX Runtime cannot run the exported graph: {_summary(e)}") from e


def _max_diff_unchecked(path: Path, names, inputs, expected) -> float:
    sess = onnx_session(path, threads=1)
    worst = 0.0
    for args, want in zip(inputs, expected, strict=True):
        got = sess.run(["scores"], {n: a.numpy() for n, a in zip(names, args, strict=True)})[0]
        if got.shape != tuple(want.shape):
            raise ExportError(f"ONNX scores have shape {got.shape}, PyTorch's {tuple(want.shape)}")
        worst = max(worst, float(np.abs(got - want.numpy()).max()))
    return worst


def onnx_session(path: Path, threads: int = 1):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def sidecar_spec(run: LoadedRun, onnx_path: Path, result: OnnxExport, tolerance: float) -> dict:
    """The input spec and everything needed to build the inputs, as JSON."""
    import onnx

    cfg, ds = run.config, run.dataset
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    meaning = {
        "hist_item": "movie tokens, newest last, left-padded with 0: token = 1 + the "
        "movie's index in item_ids",
        "hist_rating": "rating tokens: round(2 * stars) clipped to 0..10; 0 = no rating or padding",
        "hist_gap": "time-gap tokens of now - watch time in seconds: 1 + the number of "
        "gap_thresholds_seconds <= the gap; 0 = padding",
        "user_feats": "one code per user_features entry, in that order: the value's "
        "index in its vocabulary; 0 = unknown",
        "user": "user token = 1 + the user's index in the run's data; 0 = unknown",
        "scores": "one score per movie, column j = item_ids[j]: higher is better "
        "(ranking) or predicted stars (rating); watched movies are not masked",
    }

    def spec(v) -> dict:
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
        return {
            "name": v.name,
            "dtype": dtype,
            "shape": ["batch", *dims[1:]],
            "meaning": meaning.get(v.name, ""),
        }

    return {
        "format": "onnx",
        "sidecar_version": SIDECAR_VERSION,
        "file": result.path.name,
        "bstrec_version": _version("bstrec"),
        "torch_version": torch.__version__,
        "model": cfg.model.name,
        "task": run.model.task,
        "data": ds.name,
        "data_checksum": ds.checksum,
        "inputs": [spec(v) for v in graph.input],
        "outputs": [spec(v) for v in graph.output],
        "max_len": cfg.data.max_len,
        "now": "the time of the newest watch of the history (protocol R); a typed-in "
        "history without times: watches one minute apart, the newest now",
        "item_ids": [plain(i) for i in ds.item_ids.tolist()],
        "item_titles": ds.item_titles.tolist(),
        "user_features": {n: ds.user_vocab[n] for n in run.user_feature_names},
        "gap_thresholds_seconds": list(gap_thresholds()),
        "parity": {
            "max_abs_diff": result.max_abs_diff,
            "rows": result.parity_rows,
            "tolerance": tolerance,
            "onnxruntime": _version("onnxruntime"),
        },
        "export": {
            k: v for k, v in asdict(result).items() if k in ("export_seconds", "size_bytes")
        },
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(
            f"ONNX export needs the 'onnx' extra ({', '.join(missing)} "
            "missing): pip install 'bstrec[onnx]'"
        )
