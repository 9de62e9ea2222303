"""The typed records the public API answers with: recommendations and explanations.

Frozen dataclasses, so a notebook can keep them, compare them and pass them around;
``to_dict()`` gives plain JSON-ready data (what ``bstrec recommend --json`` prints) and
``to_pandas()`` a table, when pandas is installed.

They are the API's own types, built from ``recommend.py``'s answer: the serving code
may reshape its types without changing what API users see.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

RawId = int | str  # a user or movie id as the data set's files spell it


@dataclass(frozen=True)
class Reason:
    """A watched movie that weighed in a recommendation; ``weight`` is its attention
    weight (the share of the candidate's attention over the history, 0..1)."""

    movie_id: RawId
    title: str
    year: int | None
    genres: tuple[str, ...]
    weight: float


@dataclass(frozen=True)
class Recommendation:
    """One recommended movie. ``score``: higher is better (ranking), or predicted
    stars (rating); ``because``: the watched movies that weighed most, highest first."""

    movie_id: RawId
    title: str
    year: int | None
    genres: tuple[str, ...]
    score: float
    because: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class Watched:
    """A movie of the input history; ``rating`` and ``time`` (ISO 8601, UTC) are known
    for a data set's own users, None for a typed-in history."""

    movie_id: RawId
    title: str
    year: int | None
    genres: tuple[str, ...]
    rating: float | None = None
    time: str | None = None


class Recommendations(list):
    """The top-k movies, best first: a ``list`` of :class:`Recommendation`, with
    ``user_id`` (None for a typed-in history), ``history`` (recent watches, newest
    first) and ``task``."""

    def __init__(self, picks: list[Recommendation], *, user_id: RawId | None,
                 history: list[Watched], task: str):
        super().__init__(picks)
        self.user_id = user_id
        self.history = list(history)
        self.task = task

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "picks": [asdict(p) for p in self],
                "history": [asdict(w) for w in self.history], "task": self.task}

    def to_pandas(self):
        """One row per movie: rank, movie_id, title, year, genres, score and because
        (the reasons' titles, "; "-separated)."""
        pd = _pandas()
        return pd.DataFrame([
            {"rank": i, "movie_id": p.movie_id, "title": p.title, "year": p.year,
             "genres": "|".join(p.genres), "score": p.score,
             "because": "; ".join(b.title for b in p.because)}
            for i, p in enumerate(self, 1)
        ], columns=["rank", "movie_id", "title", "year", "genres", "score", "because"])

    def __repr__(self) -> str:
        who = f"user {self.user_id}" if self.user_id is not None else "a history"
        return f"Recommendations({len(self)} movies for {who}, task={self.task!r})"

    @classmethod
    def from_internal(cls, rec) -> Recommendations:
        """From ``recommend.Recommendations`` (read by attribute name)."""
        picks = [
            Recommendation(p.movie_id, p.title, p.year, tuple(p.genres), float(p.score),
                           tuple(Reason(b.movie_id, b.title, b.year, tuple(b.genres),
                                        float(b.weight)) for b in p.because))
            for p in rec.picks
        ]
        history = [Watched(w.movie_id, w.title, w.year, tuple(w.genres), w.rating, w.time)
                   for w in rec.history]
        return cls(picks, user_id=rec.user_id, history=history, task=rec.task)


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
        return pd.DataFrame([asdict(c) for c in self.contributions],
                            columns=["movie_id", "title", "watches_ago", "weight"])


def _pandas():
    try:
        import pandas as pd
    except ModuleNotFoundError:
        raise ModuleNotFoundError("to_pandas() needs pandas: pip install pandas") from None
    return pd
