"""The typed records bstrec answers with: movies, recommendations and explanations.

One set for every caller: ``recommend.Recommender`` builds them, the Python API
(``Run.recommend``, ``Run.explain``) returns them as they are, ``bstrec recommend``
prints them (``--json``: ``to_dict()``), and the HTTP API uses them as its response
models (serve/app.py), so the JSON over HTTP is ``to_dict()`` too.

Frozen dataclasses of the standard library (the HTTP server's pydantic is an optional
extra), so a notebook can keep them, compare them and pass them around; ``to_dict()``
gives plain JSON-ready data and ``to_pandas()`` a table, when pandas is installed. A
field's ``metadata["description"]`` is what the HTTP API's schema says of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

RawId = int | str  # a user or movie id as the data set's files spell it


def _doc(text: str) -> dict[str, str]:
    """A field's description, for the HTTP API's schema (pydantic reads it)."""
    return {"description": text}


@dataclass(frozen=True)
class Movie:
    """A movie of the catalogue."""

    movie_id: RawId
    title: str
    year: int | None = field(metadata=_doc("release year; null when unknown"))
    genres: tuple[str, ...]


@dataclass(frozen=True)
class Reason(Movie):
    """A watched movie that drove a recommendation; ``weight`` (0..1) is its share of
    the pick's co-occurrence count with the history (the pairs this watch formed with
    the pick in the training data), or of the pick's attention where it has none."""

    weight: float = field(
        metadata=_doc(
            "this watch's share of the pick's co-occurrence count with the history, or of "
            "the pick's attention over it where the pick co-occurs with none"
        )
    )


@dataclass(frozen=True)
class Recommendation(Movie):
    """One recommended movie. ``score``: higher is better (ranking), or predicted
    stars (rating); ``because``: the watched movies that weighed most, highest first."""

    score: float = field(
        metadata=_doc(
            "model score, higher is better: for a ranking model a log-odds whose differences "
            "matter (exp(a - b) is how many times likelier the model thinks pick a is watched "
            "next than pick b), not its level; predicted stars for a rating model"
        )
    )
    because: tuple[Reason, ...] = field(
        default=(), metadata=_doc("the watched movies that drove this pick")
    )


@dataclass(frozen=True)
class Watched(Movie):
    """A movie of the input history; ``rating`` and ``time`` (ISO 8601, UTC) are known
    for a data set's own users, None for a typed-in history."""

    rating: float | None = None
    time: str | None = field(default=None, metadata=_doc("ISO 8601, UTC; null for a typed history"))


class Recommendations(list):
    """The top-k movies, best first: a ``list`` of :class:`Recommendation`, with
    ``user_id`` (None for a typed-in history), ``history`` (recent watches, newest
    first) and ``task``."""

    def __init__(
        self,
        picks: list[Recommendation],
        *,
        user_id: RawId | None,
        history: list[Watched],
        task: str,
    ):
        super().__init__(picks)
        self.user_id = user_id
        self.history = list(history)
        self.task = task

    def to_dict(self) -> dict[str, Any]:
        """What ``bstrec recommend --json`` prints and the HTTP API answers: the
        records as ``dataclasses.asdict`` gives them."""
        return {
            "user_id": self.user_id,
            "picks": [_plain(p) for p in self],
            "history": [_plain(w) for w in self.history],
            "task": self.task,
        }

    def to_pandas(self):
        """One row per movie: rank, movie_id, title, year, genres, score and because
        (the reasons' titles, "; "-separated)."""
        pd = _pandas()
        return pd.DataFrame(
            [
                {
                    "rank": i,
                    "movie_id": p.movie_id,
                    "title": p.title,
                    "year": p.year,
                    "genres": "|".join(p.genres),
                    "score": p.score,
                    "because": "; ".join(b.title for b in p.because),
                }
                for i, p in enumerate(self, 1)
            ],
            columns=["rank", "movie_id", "title", "year", "genres", "score", "because"],
        )

    def __repr__(self) -> str:
        who = f"user {self.user_id}" if self.user_id is not None else "a history"
        return f"Recommendations({len(self)} movies for {who}, task={self.task!r})"


@dataclass(frozen=True)
class Contribution:
    """A watched movie's weight in one candidate's score; ``watches_ago`` 1 = newest."""

    movie_id: RawId
    title: str
    watches_ago: int
    weight: float


@dataclass(frozen=True)
class Explanation:
    """Why a model scores ``movie_id`` as it does for one user or history.

    ``rank``: 1-based among the movies the user has not watched (None when the movie
    is in the history: it would never be recommended). ``contributions``: every watch
    of the model's history window, highest weight first; empty for models without a
    notion of it (the baselines), and ``method`` says what the weights are.
    """

    movie_id: RawId
    title: str
    score: float
    rank: int | None
    candidates: int  # movies the rank is out of
    user_id: RawId | None
    task: str
    method: str
    contributions: tuple[Contribution, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_pandas(self):
        """One row per contribution: movie_id, title, watches_ago, weight."""
        pd = _pandas()
        return pd.DataFrame(
            [asdict(c) for c in self.contributions],
            columns=["movie_id", "title", "watches_ago", "weight"],
        )


def _plain(obj):
    """``dataclasses.asdict`` for these records (dataclasses, tuples and lists of them,
    and plain values, which it does not copy): 5x faster, and the server renders an
    answer for every request."""
    kind = type(obj)
    if kind in _ATOMIC:
        return obj
    names = _FIELD_NAMES.get(kind)
    if names is None:
        if kind is tuple:
            return tuple([x if type(x) in _ATOMIC else _plain(x) for x in obj])
        if kind is list:
            return [x if type(x) in _ATOMIC else _plain(x) for x in obj]
        if not is_dataclass(obj):
            return obj
        names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(obj))
    # atomic values inline: most fields are, and a call each was most of the cost
    out = {}
    for name in names:
        v = getattr(obj, name)
        out[name] = v if type(v) in _ATOMIC else _plain(v)
    return out


_ATOMIC = {str, int, float, bool, type(None)}
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # a record class -> its fields' names


def _pandas():
    try:
        import pandas as pd
    except ModuleNotFoundError:
        raise ModuleNotFoundError("to_pandas() needs pandas: pip install pandas") from None
    return pd
