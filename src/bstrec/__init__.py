"""bstrec: a Behavior Sequence Transformer recommender for MovieLens."""

from bstrec.data.interactions import DataError, Dataset

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


__all__ = ["DataError", "Dataset", "load_dataset", "__version__"]
