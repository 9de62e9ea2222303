"""Synthetic data sets in the exact ML-1M file format, with planted sequential structure.

What a sequence model can learn here and popularity cannot:

* **Series.** Movies come in series of consecutive ids (``Café Stories 1``, ``2``, ...).
  Having just watched part ``i``, a user watches part ``i + 1`` next with probability
  ``p_series`` (when it exists and is unseen). So "the movie after the last one" is a
  strong predictor of the next watch, and it depends on the order of the history.
* **Genre drift.** Each series has one main genre, and every user moves through the
  genres in one fixed cyclic order, one step every ``drift_every`` watches; new series
  are started in the current genre. The next genre is predictable from recent ones.
* **Popularity noise.** The remaining watches are drawn from a Zipf popularity over
  all movies, so popularity is a real but weak baseline.

Ratings follow movie quality + user bias + the user's affinity to the movie's genre,
so the rating task (protocol T) is learnable too. About ``tie_prob`` of consecutive
watches share a timestamp, to exercise the "ties keep file order" rule.

Deterministic for a seed. 500 users x 300 movies takes a few tens of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bstrec.data.readers import ML1M_AGES, ML1M_GENRES

_WORDS = ["Café", "Noël", "Señor", "Midnight", "River", "Glass", "Iron", "Summer", "Lost",
          "Paper", "Crimson", "Silent", "Golden", "Wild", "Hidden", "Northern", "Electric",
          "Velvet", "Broken", "Distant"]  # fmt: skip
_NOUNS = ["Stories", "Road", "Garden", "Protocol", "Letters", "Empire", "Harbor", "Signal",
          "Circus", "Frontier", "Orchard", "Machine", "Waltz", "Island", "Affair"]  # fmt: skip


@dataclass(frozen=True)
class SynthConfig:
    n_users: int = 500
    n_movies: int = 300
    seed: int = 0
    mean_length: float = 50.0  # mean watches per user (log-normal, at least min_length)
    min_length: int = 5
    p_series: float = 0.6  # P(next part of the series just watched)
    p_genre: float = 0.25  # P(start a series of the current genre); else popularity
    series_length: tuple[int, int] = (3, 10)  # inclusive range of parts per series
    drift_every: int = 6  # watches between steps to the next genre
    zipf: float = 1.0
    tie_prob: float = 0.05  # P(a watch has the same timestamp as the one before)
    start_time: int = 946_684_800  # 2000-01-01 UTC


@dataclass
class SynthResult:
    out_dir: Path
    n_users: int
    n_movies: int
    n_ratings: int
    series_start: np.ndarray  # (n_movies + 1,) movie id -> first id of its series


def synthesize(
    out_dir: str | Path, n_users: int, n_movies: int, seed: int, **overrides
) -> SynthResult:
    """Write ratings.dat, movies.dat and users.dat (latin-1, ``::``) into ``out_dir``."""
    cfg = SynthConfig(n_users=n_users, n_movies=n_movies, seed=seed, **overrides)
    if n_users < 1 or n_movies < 2:
        raise ValueError("need at least 1 user and 2 movies")
    rng = np.random.default_rng(seed)
    movies = _movies(cfg, rng)
    lines = []
    for uid in range(1, n_users + 1):
        items, ts = _user_sequence(cfg, rng, movies)
        stars = _ratings(cfg, rng, movies, items)
        lines.extend(
            f"{uid}::{m}::{r}::{t}"
            for m, r, t in zip(items.tolist(), stars.tolist(), ts.tolist(), strict=True)
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "ratings.dat", lines)
    _write(out / "movies.dat", movies.lines)
    _write(out / "users.dat", _users(cfg, rng))
    return SynthResult(out, n_users, n_movies, len(lines), movies.series_start)


@dataclass
class _Movies:
    series_start: np.ndarray  # (M + 1,) first id of each movie's series (index 0 unused)
    series_end: np.ndarray  # (M + 1,) last id of the series
    genre: np.ndarray  # (M + 1,) main genre index
    starts_by_genre: list[np.ndarray]  # series first ids per genre
    n_genres: int
    popularity_cdf: np.ndarray  # (M,) over ids 1..M
    quality: np.ndarray  # (M + 1,)
    lines: list[str]


def _movies(cfg: SynthConfig, rng: np.random.Generator) -> _Movies:
    m = cfg.n_movies
    lo, hi = cfg.series_length
    lengths = []
    while sum(lengths) < m:
        lengths.append(int(rng.integers(lo, hi + 1)))
    lengths[-1] -= sum(lengths) - m
    lengths = [n for n in lengths if n > 0]
    n_series = len(lengths)
    # enough series per genre that a genre is a choice, at most the 18 ML-1M genres
    n_genres = int(np.clip(n_series // 3, 1, len(ML1M_GENRES)))
    series_genre = np.arange(n_series) % n_genres
    rng.shuffle(series_genre)
    start = np.zeros(m + 1, dtype=np.int64)
    end = np.zeros(m + 1, dtype=np.int64)
    genre = np.zeros(m + 1, dtype=np.int64)
    first = 1
    lines = []
    for s, n in enumerate(lengths):
        ids = np.arange(first, first + n)
        start[ids], end[ids], genre[ids] = first, first + n - 1, series_genre[s]
        title = f"{_WORDS[s % len(_WORDS)]} {_NOUNS[(s // len(_WORDS)) % len(_NOUNS)]}"
        if s >= len(_WORDS) * len(_NOUNS):
            title += f" {s}"
        year = int(rng.integers(1940, 1995))
        for k, mid in enumerate(ids.tolist()):
            names = [ML1M_GENRES[series_genre[s]]]
            if rng.random() < 0.3:
                extra = ML1M_GENRES[int(rng.integers(len(ML1M_GENRES)))]
                if extra not in names:
                    names.append(extra)
            part = f" {k + 1}" if n > 1 else ""
            lines.append(f"{mid}::{title}{part} ({year + 2 * k})::{'|'.join(sorted(names))}")
        first += n
    weights = 1.0 / np.arange(1, m + 1) ** cfg.zipf
    pop = np.empty(m)
    pop[rng.permutation(m)] = weights
    cdf = np.cumsum(pop / pop.sum())
    series_first = np.unique(start[1:])
    return _Movies(
        series_start=start,
        series_end=end,
        genre=genre,
        starts_by_genre=[series_first[genre[series_first] == g] for g in range(n_genres)],
        n_genres=n_genres,
        popularity_cdf=cdf,
        quality=np.concatenate([[0.0], rng.normal(0, 0.6, m)]),
        lines=lines,
    )


def _user_sequence(cfg: SynthConfig, rng: np.random.Generator, mv: _Movies):
    m = cfg.n_movies
    sigma = 0.6
    n = int(rng.lognormal(np.log(cfg.mean_length) - sigma**2 / 2, sigma))
    n = int(np.clip(n, min(cfg.min_length, m), m))
    u = rng.random(n)
    pops = np.searchsorted(mv.popularity_cdf, rng.random(4 * n), side="right") + 1
    pops = np.minimum(pops, m)
    picks = rng.random(n)
    genre = int(rng.integers(mv.n_genres))
    seen = np.zeros(m + 2, dtype=bool)
    out = []
    last = 0
    p = 0  # next unused popularity draw
    for step in range(n):
        if step and step % cfg.drift_every == 0:
            genre = (genre + 1) % mv.n_genres
        nxt = 0
        if last and u[step] < cfg.p_series:
            cand = last + 1
            if cand <= mv.series_end[last] and not seen[cand]:
                nxt = cand
        if not nxt and u[step] < cfg.p_series + cfg.p_genre:
            firsts = mv.starts_by_genre[genre]
            if len(firsts):
                s = int(firsts[int(picks[step] * len(firsts))])
                for cand in range(s, int(mv.series_end[s]) + 1):
                    if not seen[cand]:
                        nxt = cand
                        break
        while not nxt and p < len(pops):
            cand = int(pops[p])
            p += 1
            if not seen[cand]:
                nxt = cand
        if not nxt:  # popularity draws exhausted (tiny catalogues): any unseen movie
            nxt = int(np.flatnonzero(~seen[1 : m + 1])[0]) + 1
        seen[nxt] = True
        out.append(nxt)
        last = nxt
    gaps = rng.exponential(86_400.0, n).astype(np.int64) + 1
    gaps[rng.random(n) < cfg.tie_prob] = 0
    gaps[0] = int(rng.integers(0, 2 * 365 * 86_400))
    return np.asarray(out, dtype=np.int64), cfg.start_time + np.cumsum(gaps)


def _ratings(cfg: SynthConfig, rng: np.random.Generator, mv: _Movies, items: np.ndarray):
    affinity = rng.normal(0, 0.6, mv.n_genres)
    bias = rng.normal(0, 0.4)
    noise = rng.normal(0, 0.5, len(items))
    raw = 3.6 + mv.quality[items] + bias + affinity[mv.genre[items]] + noise
    return np.clip(np.rint(raw), 1, 5).astype(np.int64)


def _users(cfg: SynthConfig, rng: np.random.Generator) -> list[str]:
    ages = list(ML1M_AGES)
    return [
        f"{uid}::{'MF'[int(rng.integers(2))]}::{ages[int(rng.integers(len(ages)))]}"
        f"::{int(rng.integers(21))}::{int(rng.integers(10000, 99999)):05d}"
        for uid in range(1, cfg.n_users + 1)
    ]


def _write(path: Path, lines: list[str]) -> None:
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
