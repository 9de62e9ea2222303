"""Each file format read from small hand-written files, and its error messages."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from bstrec import DataError, load_dataset
from bstrec.cli import app
from bstrec.data.readers import age_group, parse_years
from tests.data.formats import ML1M, ML100K, ML_CSV, write


def items_of_user(ds, u: int) -> list:
    lo, hi = ds.user_offsets[u], ds.user_offsets[u + 1]
    return ds.item_ids[ds.item[lo:hi]].tolist()


# ---------------------------------------------------------------- ML-1M
def test_ml1m_reads_everything(tmp_path):
    ds = load_dataset(write(tmp_path / "m", ML1M), cache=False)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 3, 5)
    assert items_of_user(ds, 0) == [10, 30, 20]  # tie at 978300760 keeps file order
    assert items_of_user(ds, 1) == [10, 20]
    assert ds.item_titles.tolist()[1] == "Misérables, Les (1995)"  # latin-1
    assert ds.item_year.tolist() == [1995, 1995, 1995]
    toy = ds.item_genres[0]
    assert [g for g, on in zip(ds.genre_names, toy, strict=True) if on] == [
        "Animation", "Children's", "Comedy"
    ]  # fmt: skip
    assert "40" in ds.unrated_items  # listed but never rated: not in the catalogue
    assert ds.user_vocab["gender"][ds.user_features["gender"][0]] == "F"
    assert ds.user_vocab["age"][ds.user_features["age"][1]] == "56+"
    assert set(ds.sources) == {"ratings.dat", "movies.dat", "users.dat"}


def test_ml1m_accepts_utf8_and_crlf(tmp_path):
    files = {k: v.replace("\n", "\r\n") for k, v in ML1M.items()}
    ds = load_dataset(write(tmp_path / "m", files, encoding="utf-8"), cache=False)
    assert ds.item_titles.tolist()[1] == "Misérables, Les (1995)"
    assert ds.n_interactions == 5


def test_ml1m_without_users_file(tmp_path):
    files = {k: v for k, v in ML1M.items() if k != "users.dat"}
    ds = load_dataset(write(tmp_path / "m", files), cache=False)
    assert ds.user_features == {}


def test_folder_with_single_subfolder(tmp_path):
    write(tmp_path / "outer" / "ml-1m", ML1M)
    assert load_dataset(tmp_path / "outer", cache=False).n_interactions == 5


# ---------------------------------------------------------------- ML-100K
def test_ml100k(tmp_path):
    ds = load_dataset(write(tmp_path / "k", ML100K), cache=False)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 3, 4)
    assert ds.item_ids.tolist() == [1, 2, 267]
    assert ds.item_year.tolist() == [1995, 1995, 0]
    assert ds.genre_names[0] == "Action" and len(ds.genre_names) == 18  # "unknown" dropped
    gold = [g for g, on in zip(ds.genre_names, ds.item_genres[1], strict=True) if on]
    assert gold == ["Action", "Adventure", "Thriller"]
    assert not ds.item_genres[2].any()
    ages = [ds.user_vocab["age"][c] for c in ds.user_features["age"]]
    assert ages == ["18-24", "50-55"]  # bucketed into the ML-1M age groups
    occ = [ds.user_vocab["occupation"][c] for c in ds.user_features["occupation"]]
    assert occ == ["technician", "other"]
    assert ds.unrated_items["1300"][0] == "'Til Théré Was You (1997)"


def test_ml100k_year_comes_from_the_title_else_the_release_date(tmp_path):
    # as in ML-1M, the title's "(1976)" is the year, whatever the date column says;
    # a title without a year falls back to the release date
    item = (
        ML100K["u.item"]
        .replace("1|Toy Story (1995)|01-Jan-1995|", "1|Carrie (1976)|13-Sep-1996|", 1)
        .replace("2|GoldenEye (1995)|01-Jan-1995|", "2|GoldenEye|17-Nov-1995|", 1)
    )
    ds = load_dataset(write(tmp_path / "k", {**ML100K, "u.item": item}), cache=False)
    assert ds.item_titles.tolist()[:2] == ["Carrie (1976)", "GoldenEye"]
    assert ds.item_year.tolist() == [1976, 1995, 0]


def test_age_groups():
    assert [age_group(a) for a in (7, 18, 24, 25, 44, 45, 50, 55, 56, 80)] == [
        "Under 18", "18-24", "18-24", "25-34", "35-44", "45-49", "50-55", "50-55", "56+", "56+"
    ]  # fmt: skip


# ---------------------------------------------------------------- CSV releases
def test_csv_release(tmp_path):
    ds = load_dataset(write(tmp_path / "c", ML_CSV), cache=False)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 2, 3)
    assert ds.item_titles.tolist() == ["Toy Story (1995)", "American President, The (1995)"]
    assert ds.rating.tolist() == [4.5, 4.0, 0.5]  # user 1 sorted by time
    toy = [g for g, on in zip(ds.genre_names, ds.item_genres[0], strict=True) if on]
    assert "Children's" in toy and "IMAX" in toy  # "Children" joins ML-1M's genre
    assert ds.user_features == {}
    assert ds.unrated_items["5"] == ("Some Film", 0, [])


def test_csv_release_without_movies(tmp_path):
    ds = load_dataset(write(tmp_path / "c", {"ratings.csv": ML_CSV["ratings.csv"]}), cache=False)
    assert ds.item_titles.tolist() == ["1", "3"] and ds.item_genres.shape == (2, 0)


def test_parse_years():
    got = parse_years(["Heat (1995)", "Heat (1995) ", "Untitled", "Scream (2)", "Movie (2007-)"])
    assert got.tolist() == [1995, 1995, 0, 0, 0]


# ---------------------------------------------------------------- own interactions
INTERACTIONS = (
    "user,item,timestamp,rating\n"
    "alice,m1,2020-01-01T10:00:00,4\n"
    "alice,m2,2020-01-02T10:00:00,5\n"
    "bob,m1,1577872800,\n"
)


def test_own_csv_with_iso_and_epoch_times(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text(INTERACTIONS)
    ds = load_dataset(f, cache=False)
    assert ds.name == "mine"
    assert ds.user_ids.tolist() == ["alice", "bob"]
    assert ds.timestamp.tolist()[:2] == [1577872800, 1577959200]
    assert np.isnan(ds.rating[2]) and ds.rating[0] == 4
    assert ds.item_titles.tolist() == ["m1", "m2"]


def test_own_parquet_with_feature_files(tmp_path):
    f = tmp_path / "events.parquet"
    pq.write_table(
        pa.table({
            "userId": [7, 7, 8, 8],
            "movieId": [1, 2, 2, 1],
            "ts": [100, 200, 150, 150],
        }),
        f,
    )  # fmt: skip
    items = tmp_path / "items.csv"
    items.write_text("item,title,genres\n1,Heat (1995),Action|Crime\n2,Up (2009),Animation\n"
                     "3,Extra,Drama\n")  # fmt: skip
    users = tmp_path / "users.csv"
    users.write_text("user,age,plan\n7,34,gold\n8,,free\n")
    ds = load_dataset(f, items=items, users=users, cache=False)
    assert not ds.has_ratings
    assert items_of_user(ds, 1) == [2, 1]  # tie at 150: file order
    assert ds.item_year.tolist() == [1995, 2009]
    assert ds.genre_names == ["Action", "Crime", "Animation", "Drama"]
    assert ds.user_vocab["age"][ds.user_features["age"][0]] == "25-34"
    assert ds.user_features["age"][1] == 0  # empty -> unknown
    assert ds.user_vocab["plan"][ds.user_features["plan"][1]] == "free"
    assert set(ds.sources) == {"interactions", "items", "users"}


def test_own_tsv(tmp_path):
    f = tmp_path / "x.tsv"
    f.write_text("user\titem\ttime\n1\t5\t10\n1\t6\t11\n")
    assert load_dataset(f, cache=False).n_interactions == 2


# ---------------------------------------------------------------- errors
def _broken(tmp_path, files, name, text, encoding="latin-1"):
    folder = write(tmp_path / "bad", {**files, name: text}, encoding)
    with pytest.raises(DataError) as e:
        load_dataset(folder, cache=False)
    return str(e.value)


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("ratings.dat", "1::10::5::978300760\n1::20::3\n", ["ratings.dat:2:", "expected 4 fields"]),
        ("ratings.dat", "1::10::5::1\n1::20::3::2\n1::30::6::3\n",
         ["ratings.dat:3:", "field 'rating'", "outside 0.5..5"]),
        ("ratings.dat", "1::10::5::1\n\n1::x::3::2\n", ["ratings.dat:3:", "field 'item'"]),
        ("ratings.dat", "1::10::5::1\n1::99::3::2\n",
         ["ratings.dat:2:", "field 'movie id' 99", "movies.dat"]),
        ("ratings.dat", "1:x:10::5::1\n", ["ratings.dat:1:"]),
        ("movies.dat", "10::Toy Story (1995)::Comedy\n20::Broken line\n",
         ["movies.dat:2:", "expected 3 fields"]),
        ("movies.dat", "10::A (1995)::Comedy\n20::B (1995)::Drama\n10::C (1995)::Drama\n",
         ["movies.dat:3:", "field 'movie id' 10 appears more than once"]),
        ("users.dat", "1::F::1::10::48067\n2::X::56::16::70072\n",
         ["users.dat:2:", "field 'gender'"]),
        ("users.dat", "1::F::1::10::48067\n2::M::57::16::70072\n", ["users.dat:2:", "field 'age'"]),
    ],
)  # fmt: skip
def test_ml1m_errors_name_file_line_field(tmp_path, name, text, expected):
    msg = _broken(tmp_path, ML1M, name, text)
    for part in expected:
        assert part in msg, msg


def test_wrong_encoding_utf16(tmp_path):
    folder = write(tmp_path / "m", ML1M)
    (folder / "ratings.dat").write_bytes(ML1M["ratings.dat"].encode("utf-16"))
    with pytest.raises(DataError, match=r"ratings\.dat:1: .*wrong encoding"):
        load_dataset(folder, cache=False)
    (folder / "ratings.dat").write_text(ML1M["ratings.dat"])
    (folder / "movies.dat").write_bytes(ML1M["movies.dat"].encode("utf-16"))
    with pytest.raises(DataError, match=r"movies\.dat:1: .*wrong encoding"):
        load_dataset(folder, cache=False)


def test_missing_file(tmp_path):
    folder = write(tmp_path / "m", {"ratings.dat": ML1M["ratings.dat"]})
    with pytest.raises(DataError, match=r"movies\.dat: file not found"):
        load_dataset(folder, cache=False)
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "nope", cache=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MovieLens files"):
        load_dataset(tmp_path / "empty", cache=False)


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("u.data", "1\t1\t5\t1\n1\t2\t0\t2\n", ["u.data:2:", "field 'rating'"]),
        ("u.item", "1|Toy Story (1995)|01-Jan-1995||x|0|1\n", ["u.item:1:", "expected 24 fields"]),
        ("u.user", "1|24|M|technician|85711\n2|old|F|other|94043\n", ["u.user:2:", "field 'age'"]),
    ],
)  # fmt: skip
def test_ml100k_errors(tmp_path, name, text, expected):
    msg = _broken(tmp_path, ML100K, name, text)
    for part in expected:
        assert part in msg, msg


def test_ml100k_bad_release_date(tmp_path):
    bad = ML100K["u.item"].replace("01-Jan-1995", "Jan 1995", 1)
    msg = _broken(tmp_path, ML100K, "u.item", bad)
    assert "u.item:1:" in msg and "field 'release date'" in msg


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("ratings.csv", "user,movie,rating,timestamp\n1,1,4,1\n", ["ratings.csv:1:", "header"]),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,1\n1,3\n",
         ["ratings.csv:3:", "expected 4 fields"]),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,1\n1,3,5.5,2\n",
         ["ratings.csv:3:", "field 'rating'"]),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,1\n1,7,5,2\n",
         ["ratings.csv:3:", "field 'movie id' 7"]),
    ],
)  # fmt: skip
def test_csv_errors(tmp_path, name, text, expected):
    msg = _broken(tmp_path, ML_CSV, name, text)
    for part in expected:
        assert part in msg, msg


def test_csv_movies_wrong_encoding(tmp_path):
    folder = write(tmp_path / "c", ML_CSV)
    latin1 = ML_CSV["movies.csv"].replace("Some", "Sómé").encode("latin-1")
    (folder / "movies.csv").write_bytes(latin1)
    with pytest.raises(DataError, match=r"movies\.csv:4: not valid utf-8"):
        load_dataset(folder, cache=False)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("user,item\n1,2\n", ["mine.csv:1:", "no 'timestamp' column"]),
        ("user,item,timestamp\n1,2,3\n1,2,yesterday\n", ["mine.csv:3:", "field 'timestamp'"]),
        ("user,item,timestamp,rating\n1,2,3,4\n1,2,3,9\n", ["mine.csv:3:", "field 'rating'"]),
        ("user,item,timestamp\n1,2,3\n,2,4\n", ["mine.csv:3:", "field 'user' is empty"]),
        ("user,item,timestamp\n1,2,3\n1,2\n", ["mine.csv:3:", "expected 3 fields"]),
    ],
)  # fmt: skip
def test_own_file_errors(tmp_path, text, expected):
    f = tmp_path / "mine.csv"
    f.write_text(text)
    with pytest.raises(DataError) as e:
        load_dataset(f, cache=False)
    for part in expected:
        assert part in str(e.value), str(e.value)


def test_own_file_unknown_item(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text("user,item,timestamp\n1,2,3\n1,5,4\n")
    items = tmp_path / "items.csv"
    items.write_text("item,title\n2,Two\n")
    with pytest.raises(DataError, match=r"mine\.csv:3: field 'item' 5 is not listed in"):
        load_dataset(f, items=items, cache=False)


def test_own_parquet_error_names_row(tmp_path):
    f = tmp_path / "e.parquet"
    pq.write_table(pa.table({"user": [1, 1], "item": [1, 2], "timestamp": [1, 2],
                             "rating": [3.0, 7.0]}), f)  # fmt: skip
    with pytest.raises(DataError, match=r"e\.parquet: row 2: field 'rating'"):
        load_dataset(f, cache=False)


def test_cli_error_is_one_line_and_nonzero(tmp_path):
    folder = write(tmp_path / "bad", {**ML1M, "ratings.dat": "1::10::9::1\n"})
    result = CliRunner().invoke(app, ["data", "info", str(folder), "--no-cache"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "ratings.dat:1:" in lines[0]
