"""bstrec: a Behavior Sequence Transformer recommender for MovieLens."""

from bstrec.data.interactions import DataError, Dataset

__version__ = "0.1.0"


def load_dataset(path_or_name, data_dir=None) -> Dataset:
    """Load a data set from a folder, an interactions file, or a known name ("ml-1m")."""
    from bstrec.data.loaders import load_dataset as _load

    return _load(path_or_name, data_dir=data_dir)


__all__ = ["DataError", "Dataset", "load_dataset", "__version__"]
