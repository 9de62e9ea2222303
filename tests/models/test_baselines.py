import numpy as np
import torch

from bstrec.data.batches import SequenceStore
from bstrec.data.splits import leave_one_out
from bstrec.models.baselines import Popularity, RatingBaseline
from tests.factories import tiny_dataset


def test_popularity_counts_training_rows_only():
    ds = tiny_dataset()
    sp = leave_one_out(ds)
    rows = sp.train_rows(ds.user_offsets)
    pop = Popularity.fit(ds.item, rows, ds.n_items)
    expected = np.bincount(ds.item[rows], minlength=ds.n_items)
    assert pop.counts[1:].numpy().tolist() == expected.tolist()


def test_bias_baseline_beats_global_mean_on_training_data():
    ds = tiny_dataset()
    # give items a strong bias so the fit has something to find
    ds.rating[:] = np.clip(1 + (ds.item % 5), 1, 5)
    sp = leave_one_out(ds)
    rows = sp.train_rows(ds.user_offsets)
    args = (ds.user, ds.item, ds.rating, rows, ds.n_users, ds.n_items)
    mean = RatingBaseline.fit("global-mean", *args)
    bias = RatingBaseline.fit("bias", *args, reg=0.1)
    store = SequenceStore(ds)
    batch = store.batch_for_targets(torch.from_numpy(rows), 3)
    err = {
        n: ((m.score(batch, batch.target[:, None])[:, 0] - batch.label) ** 2).mean().item()
        for n, m in (("mean", mean), ("bias", bias))
    }
    assert err["bias"] < 0.2 * err["mean"]
