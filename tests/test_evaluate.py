"""Protocol R/T metric code: ranks, ties, exclusion of seen movies."""

import math

import numpy as np
import torch

from bstrec.data.batches import SequenceStore
from bstrec.data.splits import leave_one_out
from bstrec.evaluate import evaluate_ranking, evaluate_rating, ranking_metrics, target_ranks
from bstrec.models.base import ScoringModel
from tests.factories import tiny_dataset


def test_ties_count_above_the_target():
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    rank = target_ranks(
        scores,
        torch.tensor([2]),
        torch.tensor([], dtype=torch.long),
        torch.tensor([], dtype=torch.long),
    )
    assert rank.item() == 3  # a model that scores everything alike ranks the target last


def test_seen_items_are_excluded_but_the_target_competes():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0]])
    rank = target_ranks(scores, torch.tensor([3]), torch.tensor([0, 0]), torch.tensor([0, 3]))
    assert rank.item() == 2  # items 1 and 2 are above; item 0 is seen and removed


def test_ranking_metrics_values():
    m = ranking_metrics(np.array([0, 1, 9, 10, 50]))
    assert m["HR@1"] == 0.2
    assert m["HR@10"] == 0.6
    assert math.isclose(m["NDCG@10"], (1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5)
    assert math.isclose(m["MRR"], (1 + 1 / 2 + 1 / 10 + 1 / 11 + 1 / 51) / 5)


class Oracle(ScoringModel):
    """Knows the answer: scores the true next item of each row highest."""

    def __init__(self, n_items, answer):
        super().__init__()
        self.n_items, self.answer = n_items, answer

    def score(self, batch, candidates):
        cands = candidates[None].expand(len(batch), -1)
        return (cands == batch.target[:, None]).float()


class Constant(ScoringModel):
    def __init__(self, n_items):
        super().__init__()
        self.n_items = n_items

    def score(self, batch, candidates):
        cands = candidates if candidates.dim() == 2 else candidates[None].expand(len(batch), -1)
        return torch.zeros(cands.shape)


def test_oracle_is_perfect_and_constant_gets_nothing():
    ds = tiny_dataset()
    sp = leave_one_out(ds)
    store = SequenceStore(ds)
    perfect = evaluate_ranking(Oracle(ds.n_items, None), store, sp.targets("test"), 5)
    assert perfect["HR@1"] == 1.0 and perfect["users"] == ds.n_users
    flat = evaluate_ranking(Constant(ds.n_items), store, sp.targets("test"), 5)
    assert flat["HR@20"] == 0.0 and flat["MRR"] < 0.1


def test_rating_errors_are_in_stars():
    ds = tiny_dataset()
    sp = leave_one_out(ds)

    class Three(Constant):
        task = "rating"

        def score(self, batch, candidates):
            return torch.full(candidates.shape, 3.0)

    m = evaluate_rating(Three(ds.n_items), SequenceStore(ds), sp.targets("test"), 5)
    truth = ds.rating[sp.targets("test")]
    assert math.isclose(m["RMSE"], float(np.sqrt(np.mean((truth - 3) ** 2))), rel_tol=1e-6)
    assert math.isclose(m["MAE"], float(np.mean(np.abs(truth - 3))), rel_tol=1e-6)


def test_non_finite_scores_are_never_hits():
    nan, inf = float("nan"), float("inf")
    none = (torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    # a model that scores everything NaN ranks every target last
    all_nan = torch.full((2, 5), nan)
    assert target_ranks(all_nan, torch.tensor([0, 3]), *none).tolist() == [4, 4]
    # a NaN or inf candidate counts above a finite target, a NaN target is a miss
    scores = torch.tensor([[nan, 1.0, 0.5, inf], [2.0, nan, 1.0, 0.0]])
    assert target_ranks(scores, torch.tensor([1, 1]), *none).tolist() == [2, 3]
    # seen movies stay excluded even when their scores are NaN
    ranks = target_ranks(scores, torch.tensor([1, 0]), torch.tensor([0, 0]), torch.tensor([0, 3]))
    assert ranks.tolist() == [0, 1]


def test_nan_model_gets_nothing_end_to_end():
    ds = tiny_dataset()
    sp = leave_one_out(ds)

    class NaNs(Constant):
        def score(self, batch, candidates):
            return super().score(batch, candidates) * float("nan")

    m = evaluate_ranking(NaNs(ds.n_items), SequenceStore(ds), sp.targets("test"), 5)
    assert m["HR@20"] == 0.0 and m["NDCG@10"] == 0.0


def test_sample_targets_is_fixed_and_bounded():
    from bstrec.evaluate import sample_targets

    rows = np.arange(100, 1100)
    a, b = sample_targets(rows, 300), sample_targets(rows, 300)
    assert len(a) == 300 and np.array_equal(a, b)  # the same sample every call
    assert np.all(np.diff(a) > 0) and set(a) <= set(rows)
    assert np.array_equal(sample_targets(rows, 0), rows)
    assert np.array_equal(sample_targets(rows, 5000), rows)


def test_standard_error_of_ndcg():
    ranks = np.array([0, 1, 50, 50])
    per_user = np.array([1.0, 1 / math.log2(3), 0.0, 0.0])
    m = ranking_metrics(ranks)
    assert math.isclose(m["NDCG@10_se"], per_user.std(ddof=1) / 2)
