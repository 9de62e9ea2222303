"""bstrec: a Behavior Sequence Transformer recommender for MovieLens.

The public API (documented in README.md, "Python API"): ``load_dataset``,
``describe``, ``fit`` (train into a run folder), ``load_run`` and the ``Run`` it
returns (``evaluate``, ``recommend``, ``explain``), the records they answer with, and
the exceptions. Everything else is internal and may change.
"""

# The API modules import torch only when a function runs: `import bstrec` and
# `bstrec --help` stay fast.
from bstrec.api import Run, describe, fit, load_run
from bstrec.data.interactions import DataError, Dataset
from bstrec.errors import ArgumentError
from bstrec.results import (
    Contribution,
    Explanation,
    Reason,
    Recommendation,
    Recommendations,
    Watched,
)

__version__ = "0.1.0"


def load_dataset(
    path_or_name, data_dir=None, *, items=None, users=None, cache: bool = True, name=None
) -> Dataset:
    """Load a data set from a folder, an interactions file, or a known name ("ml-1m").

    ``items`` / ``users``: optional feature files for an interactions file. ``cache``:
    use the processed cache in the data folder (rebuilt when a source file changes).
    """
    from bstrec.data.loaders import load_dataset as _load

    return _load(path_or_name, data_dir, items=items, users=users, cache=cache, name=name)


__all__ = [
    "ArgumentError",
    "Contribution",
    "DataError",
    "Dataset",
    "Explanation",
    "Reason",
    "Recommendation",
    "Recommendations",
    "Run",
    "Watched",
    "__version__",
    "describe",
    "fit",
    "load_dataset",
    "load_run",
]
