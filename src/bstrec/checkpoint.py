"""Training checkpoints for ``bstrec train --resume``.

``run/checkpoint/last.pt`` holds everything needed to continue exactly where training
stopped, mid-epoch included: model, optimizer and scheduler state, the best weights
so far, every random state (torch per rank, the negative sampler's generator, numpy,
python), the position (epoch, batch within the epoch, global step), the running loss
of the epoch, the best validation record, the bad-evaluation count, the history and
the training time. The epoch's permutation is not stored: it is a function of
(seed, epoch), see ``EpochShards``.

Writes go to a temp file, are fsynced and renamed over ``last.pt``; the checkpoint it
replaces is kept as ``previous.pt``. Only plain containers, numbers, strings and
tensors are stored, so loading uses ``torch.load(weights_only=True)`` and never
unpickles arbitrary objects. A digest of the contents (torch.load does not notice a
flipped byte inside tensor data) turns silent corruption into a clear error.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

FORMAT = "bstrec-checkpoint"
VERSION = 1
REQUIRED = ("model", "optimizer", "rng", "progress", "best", "history")


class CheckpointError(RuntimeError):
    """No usable checkpoint to resume from."""


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / "checkpoint"


def save(run: Path, state: dict) -> Path:
    """Atomically make ``state`` the latest checkpoint; the one before becomes previous.pt."""
    folder = checkpoint_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    payload["digest"] = digest(payload)
    last, prev = folder / "last.pt", folder / "previous.pt"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".last.pt.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        # A crash between these two renames leaves only previous.pt, which load() uses.
        if last.exists():
            os.replace(last, prev)
        os.replace(tmp, last)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    return last


def load(run: Path, log=print) -> tuple[dict, Path]:
    """The newest valid checkpoint of ``run`` and its path.

    A corrupt or truncated last.pt is reported (naming the file) and previous.pt is
    used instead if it is valid; with neither usable, CheckpointError names both.
    """
    folder = checkpoint_dir(run)
    last, prev = folder / "last.pt", folder / "previous.pt"
    if not last.exists() and not prev.exists():
        raise CheckpointError(
            f"{folder}: no checkpoint to resume from (last.pt missing); "
            f"was {run} trained by this version of bstrec?"
        )
    problems = []
    for path in (last, prev):
        if not path.exists():
            problems.append(f"{path}: missing")
            continue
        try:
            state = read(path)
        except CheckpointError as e:
            problems.append(str(e))
            log(f"warning: {e}")
            continue
        if path == prev:
            log(f"warning: resuming from {path}, the checkpoint before last.pt")
        return state, path
    raise CheckpointError("no usable checkpoint: " + "; ".join(problems))


def read(path: Path) -> dict:
    """One checkpoint file, verified; CheckpointError (naming the file) if it is not sound."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle opcodes, disallowed globals
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({_first_line(e)})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a bstrec training checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {state.get('version')}, "
            f"this bstrec reads version {VERSION}"
        )
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    stored = state.pop("digest", None)
    if stored != digest(state):
        raise CheckpointError(f"{path}: corrupt checkpoint (contents do not match their digest)")
    return state


def digest(obj) -> str:
    """A hash of a checkpoint's contents, independent of how torch lays out the file."""
    h = hashlib.blake2b(digest_size=20)
    _feed(h, {k: v for k, v in obj.items() if k != "digest"} if isinstance(obj, dict) else obj)
    return h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, list | tuple):  # a tuple may come back as a list, or vice versa
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
