"""The answer records: what the HTTP API and `--json` print is exactly what
``dataclasses.asdict`` gives for them."""

from dataclasses import asdict

from bstrec.results import Reason, Recommendation, Recommendations, Watched


def test_to_dict_is_asdict_of_every_record():
    because = (
        Reason(7, "Seven (1995)", 1995, ("Crime", "Thriller"), weight=0.61),
        Reason(9, "Untitled", None, (), weight=-0.02),
    )
    picks = [
        Recommendation(1, "Heat (1995)", 1995, ("Action",), score=2.5, because=because),
        Recommendation("m2", "No year", None, (), score=-1.0, because=()),
    ]
    history = [Watched(3, "Up (2009)", 2009, ("Animation",), rating=4.5, time="2009-06-01")]
    recs = Recommendations(picks, user_id="u1", history=history, task="ranking")
    d = recs.to_dict()
    assert d == {
        "user_id": "u1",
        "picks": [asdict(p) for p in picks],
        "history": [asdict(w) for w in history],
        "task": "ranking",
    }
    # nested records become dicts, tuples stay tuples, as asdict leaves them
    assert d["picks"][0]["because"][0] == {
        "movie_id": 7,
        "title": "Seven (1995)",
        "year": 1995,
        "genres": ("Crime", "Thriller"),
        "weight": 0.61,
    }
    assert type(d["picks"][0]["because"]) is tuple
