"""The sparse item x item matrix that co-occurrence and item-kNN read: both of its
paths (dense copy, sparse lookups) against a plain dense reference."""

import pytest
import torch

import bstrec.models.item_pairs as item_pairs
from bstrec.models.item_pairs import ItemPairs, recent


def random_pairs(n_items=30, density=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = n_items + 1
    m = torch.rand(size, size, generator=g) * (torch.rand(size, size, generator=g) < density)
    m[0], m[:, 0] = 0, 0  # token 0 is padding
    keys = m.flatten().nonzero()[:, 0]
    pairs = ItemPairs(n_items)
    pairs.set(keys, m.flatten()[keys])
    return pairs, m


@pytest.mark.parametrize("dense", [True, False])
def test_weighted_lookups_and_rows_equal_the_dense_reference(monkeypatch, dense):
    pairs, m = random_pairs()
    if not dense:
        monkeypatch.setattr(item_pairs, "DENSE_MAX_ITEMS", 0)
    assert (pairs.dense() is not None) == dense
    g = torch.Generator().manual_seed(1)
    hist = torch.randint(0, 31, (6, 8), generator=g)  # some padding (0) among them
    last, w = recent(hist, 5, 0.6)
    want_rows = torch.einsum("bn,bnc->bc", w, m[last])
    torch.testing.assert_close(pairs.weighted_rows(last, w), want_rows)
    cands = torch.randint(1, 31, (6, 9), generator=g)
    torch.testing.assert_close(pairs.weighted(last, w, cands), want_rows.gather(1, cands))


def test_recent_takes_the_newest_first_and_ignores_padding():
    last, w = recent(torch.tensor([[0, 0, 4, 7, 9]]), 4, 0.5)
    assert last.tolist() == [[9, 7, 4, 0]]
    assert w.tolist() == [[1.0, 0.5, 0.25, 0.0]]


def test_a_checkpoint_loads_into_an_empty_matrix():
    pairs, _ = random_pairs()
    fresh = ItemPairs(30)
    fresh.load_state_dict(pairs.state_dict())
    hist = torch.tensor([[3, 5, 8]])
    last, w = recent(hist, 3, 0.7)
    torch.testing.assert_close(fresh.weighted_rows(last, w), pairs.weighted_rows(last, w))
