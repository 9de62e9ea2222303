"""The processed cache: hits, rebuilds when a source changes, and what it never writes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bstrec import DataError, load_dataset
from bstrec.data import loaders
from bstrec.data.cache import dataset_from_arrays, dataset_to_arrays
from tests.data.formats import ML1M, write


@pytest.fixture
def parse_calls(monkeypatch):
    """Count how often the source files are actually parsed."""
    calls = []
    real = loaders.parse

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(loaders, "parse", counting)
    return calls


def assert_same(a, b):
    for k in ("user_ids", "item_ids", "user", "item", "timestamp", "user_offsets",
              "item_titles", "item_year", "item_genres"):  # fmt: skip
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    np.testing.assert_array_equal(a.rating, b.rating)
    assert a.genre_names == b.genre_names and a.user_vocab == b.user_vocab
    assert a.user_features.keys() == b.user_features.keys()
    for k in a.user_features:
        np.testing.assert_array_equal(a.user_features[k], b.user_features[k])
    assert a.unrated_items == b.unrated_items
    assert (a.checksum, a.sources, a.name) == (b.checksum, b.sources, b.name)


def test_second_load_is_a_hit_and_equal(tmp_path, parse_calls):
    src = write(tmp_path / "src", ML1M)
    cache = tmp_path / "cache"
    first = load_dataset(src, cache)
    second = load_dataset(src, cache)
    assert len(parse_calls) == 1
    assert_same(first, second)
    assert_same(first, load_dataset(src, cache=False))
    assert len(list((cache / "processed").glob("*.npz"))) == 1


def test_rebuilt_when_a_source_changes(tmp_path, parse_calls):
    src = write(tmp_path / "src", ML1M)
    cache = tmp_path / "cache"
    assert load_dataset(src, cache).n_interactions == 5
    with open(src / "ratings.dat", "a") as f:
        f.write("3::30::1::978300900\n")
    assert load_dataset(src, cache).n_interactions == 6
    assert len(parse_calls) == 2


def test_same_size_change_is_caught_by_md5(tmp_path, parse_calls):
    src = write(tmp_path / "src", ML1M)
    cache = tmp_path / "cache"
    before = load_dataset(src, cache)
    path = src / "ratings.dat"
    st = path.stat()
    path.write_text(ML1M["ratings.dat"].replace("1::10::5::", "1::10::1::"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    after = load_dataset(src, cache)
    assert len(parse_calls) == 2
    assert after.checksum != before.checksum and 1.0 in after.rating.tolist()


def test_touch_without_change_still_hits(tmp_path, parse_calls):
    src = write(tmp_path / "src", ML1M)
    cache = tmp_path / "cache"
    load_dataset(src, cache)
    os.utime(src / "movies.dat")
    load_dataset(src, cache)
    assert len(parse_calls) == 1  # re-hashed, same md5, same entry


def test_copies_share_the_entry_but_keep_their_names(tmp_path, parse_calls):
    cache = tmp_path / "cache"
    a = load_dataset(write(tmp_path / "a", ML1M), cache)
    b = load_dataset(write(tmp_path / "b", ML1M), cache)
    assert len(parse_calls) == 1
    assert (a.name, b.name) == ("a", "b")


def test_failed_load_writes_nothing(tmp_path):
    src = write(tmp_path / "src", {**ML1M, "ratings.dat": "1::10::9::1\n"})
    cache = tmp_path / "cache"
    with pytest.raises(DataError):
        load_dataset(src, cache)
    assert not cache.exists() or not any(cache.rglob("*"))


def test_never_writes_beside_the_sources(tmp_path):
    src = write(tmp_path / "src", ML1M)
    before = sorted(p.name for p in src.iterdir())
    load_dataset(src, tmp_path / "cache")
    load_dataset(src, tmp_path / "cache")
    assert sorted(p.name for p in src.iterdir()) == before


def test_cache_off_writes_nothing(tmp_path):
    load_dataset(write(tmp_path / "src", ML1M), tmp_path / "cache", cache=False)
    assert not (tmp_path / "cache").exists()


def test_corrupt_entry_is_rebuilt(tmp_path, parse_calls):
    src = write(tmp_path / "src", ML1M)
    cache = tmp_path / "cache"
    load_dataset(src, cache)
    (entry,) = (cache / "processed").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    assert load_dataset(src, cache).n_interactions == 5
    assert len(parse_calls) == 2
    assert load_dataset(src, cache).n_interactions == 5
    assert len(parse_calls) == 2


def test_env_cache_dir_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("BSTREC_CACHE_DIR", str(tmp_path / "elsewhere"))
    load_dataset(write(tmp_path / "src", ML1M))
    assert list((tmp_path / "elsewhere" / "processed").glob("*.npz"))


def test_round_trip_with_string_ids(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text("user,item,timestamp\nann,x,1\nann,y,2\nbo,x,3\n")
    ds = load_dataset(f, cache=False)
    back = dataset_from_arrays(dataset_to_arrays(ds))
    assert_same(ds, back)
    assert all(v.dtype != object for v in dataset_to_arrays(ds).values())
    assert_same(ds, load_dataset(f, tmp_path / "cache"))
    assert_same(ds, load_dataset(f, tmp_path / "cache"))


def test_feature_files_are_part_of_the_key(tmp_path, parse_calls):
    f = tmp_path / "mine.csv"
    f.write_text("user,item,timestamp\n1,1,1\n1,2,2\n")
    items = tmp_path / "items.csv"
    items.write_text("item,title\n1,One (1990)\n2,Two (1991)\n")
    cache = tmp_path / "cache"
    plain = load_dataset(f, cache)
    titled = load_dataset(f, cache, items=items)
    assert plain.item_titles.tolist() == ["1", "2"]
    assert titled.item_titles.tolist() == ["One (1990)", "Two (1991)"]
    items.write_text("item,title\n1,Uno (1990)\n2,Dos (1991)\n")
    assert load_dataset(f, cache, items=items).item_titles.tolist()[0] == "Uno (1990)"
    assert len(parse_calls) == 3
