"""SASRec peer: causal (never reads later positions), per example, learns a chain."""

import torch

from bstrec.config import ModelConfig, RunConfig
from bstrec.data.batches import SequenceStore, training_rows
from bstrec.data.splits import leave_one_out
from bstrec.evaluate import evaluate_ranking
from bstrec.models.sasrec import SASRec
from bstrec.train import train
from tests.factories import tiny_dataset


def model_and_batch(max_len=6):
    ds = tiny_dataset()
    torch.manual_seed(0)
    m = SASRec(ModelConfig(dim=16, heads=2, blocks=2, dropout=0.0), ds.n_items, max_len).eval()
    rows = torch.tensor([ds.user_offsets[u] + k for u, k in [(0, 1), (1, 5), (2, 9), (3, 11)]])
    return m, SequenceStore(ds).batch_for_targets(rows, max_len), ds


def test_states_are_causal_and_per_example():
    m, batch, ds = model_and_batch()
    h = m.states(batch.hist_item)
    later = batch.hist_item.clone()
    later[:, -1] = torch.randint(1, ds.n_items + 1, (len(batch),))  # change the newest watch
    h2 = m.states(later)
    # positions before the newest never read it
    torch.testing.assert_close(
        h[:, :-1][batch.hist_mask[:, :-1]], h2[:, :-1][batch.hist_mask[:, :-1]]
    )
    # one example's scores do not depend on the rest of its batch
    full = m.score_all(batch)
    for i in range(len(batch)):
        torch.testing.assert_close(m.score_all(batch.index(slice(i, i + 1)))[0], full[i])
    cands = torch.arange(1, ds.n_items + 1)
    torch.testing.assert_close(m.score(batch, cands), full)


def test_window_rows_cover_each_training_target_once():
    ds = tiny_dataset()
    sp = leave_one_out(ds)
    every = training_rows(ds, sp.train_end)
    strided = training_rows(ds, sp.train_end, stride=4)
    assert set(strided) <= set(every)
    # each training target is the target or one of the <= 3 history labels of a window
    covered = {int(t) - k for t in strided for k in range(4)}
    assert set(every.tolist()) <= covered


def test_sasrec_learns_the_chain(tmp_path):
    ds = tiny_dataset(n_users=60, per_user=14)
    cfg = RunConfig()
    cfg.model.name = "sasrec"
    cfg.model.dim, cfg.model.heads = 16, 2
    cfg.data.max_len = 6
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr = 30, 32, 0.01
    cfg.train.warmup_steps, cfg.train.progress = 10, False
    res = train(cfg, ds, tmp_path / "s", log=lambda _m: None)
    sp = leave_one_out(ds)
    m = evaluate_ranking(res.model, SequenceStore(ds), sp.targets("test"), 6)
    assert m["HR@10"] > 0.5  # popularity gets about 10 / 43 on this chain


def test_an_empty_batch_scores_nothing():
    m, batch, ds = model_and_batch()
    empty = batch.index(slice(0, 0))
    assert m.score_all(empty).shape == (0, ds.n_items)
