"""The exceptions of the public API, in one place.

Every failure the API reports is an exception with a message meant for a person:

- ``ArgumentError`` (a ``ValueError``): the call asks for something that cannot be,
  e.g. ``k=0``, both ``user`` and ``history``, an unknown model name. The command line
  turns it into exit status 2 (a usage error).
- ``DataError`` (a ``ValueError``): the data, a run folder or an id is wrong or unknown.
  Exit status 1.
- ``TrainingError`` / ``CheckpointError`` (``RuntimeError``): training cannot go on.
  Exit status 1.
"""

from __future__ import annotations

from bstrec.data.interactions import DataError


class ArgumentError(ValueError):
    """A call's arguments ask for something that cannot be (a usage error)."""


__all__ = ["ArgumentError", "DataError"]
