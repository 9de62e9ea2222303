"""`bstrec export --format onnx`: ONNX Runtime scores as PyTorch does, for known users and
for short and empty histories, and the sidecar says how to build the inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

for _module in ("onnx", "onnxruntime", "onnxscript"):
    pytest.importorskip(
        _module,
        reason=f"ONNX export tests need the 'onnx' extra ({_module} "
        "is not installed): pip install -e '.[onnx]'",
    )

import bstrec  # noqa: E402
from bstrec.cli import app  # noqa: E402
from bstrec.data.batches import SequenceStore, gap_bucket, history_batch  # noqa: E402
from bstrec.export_onnx import gap_thresholds, onnx_session  # noqa: E402
from tests.factories import tiny_dataset  # noqa: E402

TINY = {
    "model__dim": 16,
    "model__heads": 2,
    "model__mlp": [16, 8],
    "data__max_len": 5,
    "train__epochs": 1,
    "train__batch_size": 64,
    "train__negatives": 8,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("onnx") / "bst"
    return bstrec.fit(tiny_dataset(), out=out, log=None, progress=False, **TINY)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx-out") / "model.onnx"
    r = CliRunner().invoke(
        app, ["export", str(run.path), "--format", "onnx", "--out", str(path), "--json"]
    )
    assert r.exit_code == 0, r.output
    return path, json.loads(r.output)


def _histories(run):
    """Known users' batches, then typed-in histories of 1, 2 and 3 movies (mostly padding)
    and an all-padding one, with and without user features."""
    ds = run.dataset
    store = SequenceStore(ds, run.loaded.user_feature_names)
    batches = [store.batch_for_users(torch.arange(0, ds.n_users, 3), run.config.data.max_len)]
    for toks, feats in (([4], [0, 0]), ([7, 9], [1, 2]), ([1, 2, 3], [2, 1]), ([], [0, 0])):
        batches.append(
            history_batch(
                toks,
                run.config.data.max_len,
                2,
                user_feats=feats,
                times=[100 * i for i in range(len(toks))] or None,
                now=500 if toks else None,
            )
        )
    return batches


def _feed(sidecar, batch) -> dict:
    by_name = {
        "hist_item": batch.hist_item,
        "hist_rating": batch.hist_rating,
        "hist_gap": batch.hist_gap,
        "user_feats": batch.user_feats,
        "user": batch.user,
    }
    return {i["name"]: by_name[i["name"]].numpy().astype(np.int64) for i in sidecar["inputs"]}


def test_onnx_runtime_scores_equal_pytorch(run, exported):
    path, body = exported
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert [i["name"] for i in sidecar["inputs"]] == [
        "hist_item",
        "hist_rating",
        "hist_gap",
        "user_feats",
    ]
    assert sidecar["outputs"][0]["shape"] == ["batch", run.dataset.n_items]
    assert body["max_abs_diff"] <= 1e-4 and sidecar["parity"]["max_abs_diff"] <= 1e-4
    sess = onnx_session(path)
    model = run.model
    model.freeze_catalog()
    worst, rows = 0.0, 0
    for batch in _histories(run):
        with torch.no_grad():
            want = model.score_all(batch).numpy()
        got = sess.run(["scores"], _feed(sidecar, batch))[0]
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
        rows += len(batch)
    assert rows >= 14 and worst <= 1e-4, worst


def test_a_service_can_rank_from_the_sidecar_alone(run, exported):
    """Top-10 built from the ONNX scores and the sidecar's item_ids equals recommend()."""
    path, _ = exported
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    ds = run.dataset
    u = 4
    batch = SequenceStore(ds, run.loaded.user_feature_names).batch_for_users(
        torch.tensor([u]), sidecar["max_len"]
    )
    scores = onnx_session(path).run(["scores"], _feed(sidecar, batch))[0][0]
    seen = ds.item[ds.user_offsets[u] : ds.user_offsets[u + 1]]
    scores[seen] = -np.inf
    top = [sidecar["item_ids"][j] for j in np.argsort(-scores, kind="stable")[:10]]
    picks = [p.movie_id for p in run.recommend(user=int(ds.user_ids[u]), k=10)]
    assert top[:5] == picks[:5]  # ties may order differently further down
    assert set(top) == set(picks)


def test_gap_thresholds_reproduce_the_gap_buckets():
    t = np.asarray(gap_thresholds())
    gaps = np.concatenate(
        [np.arange(0, 5000), np.unique(np.logspace(3, 12, 4000).astype(int)), t, t - 1, t + 1]
    )
    gaps = gaps[gaps >= 0]
    want = gap_bucket(torch.from_numpy(gaps)).numpy()
    got = 1 + (gaps[:, None] >= t[None, :]).sum(1)
    assert (got == want).all()


def test_large_catalogue_wide_part_exports_without_a_dense_matrix(run, tmp_path, monkeypatch):
    # above DENSE_MAX_ITEMS the wide part is sparse; the export reads it by a padded gather
    import bstrec.export_onnx as ex

    monkeypatch.setattr(ex, "DENSE_MAX_ITEMS", 0)
    res = run.export_onnx(tmp_path / "sparse.onnx")
    assert res.max_abs_diff is not None and res.max_abs_diff <= 1e-4
    scorer = ex.CatalogueScorer(run.model, 2, False)
    assert isinstance(scorer.model.wide.counts, ex._PaddedRows)
    batch = _histories(run)[0]
    with torch.no_grad():
        assert torch.allclose(
            scorer(*scorer.inputs_of(batch)), run.model.score_all(batch), atol=1e-5
        )


def test_export_errors(run, tmp_path):
    r = CliRunner().invoke(
        app, ["export", str(run.path), "--format", "tflite", "--out", str(tmp_path / "m")]
    )
    assert r.exit_code == 2 and "--format must be one of onnx" in r.output
    r = CliRunner().invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 1 and "not a run folder" in r.output
    assert not (tmp_path / "m.onnx").exists()


def test_missing_onnx_packages_are_named_with_the_extra(run, tmp_path, monkeypatch):
    import importlib.util

    from bstrec.export_onnx import ExportError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxscript" else real(name, *a),
    )
    with pytest.raises(ExportError, match=r"onnxscript missing\): pip install 'bstrec\[onnx\]'"):
        run.export_onnx(tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_a_graph_with_a_fixed_batch_size_is_refused(tmp_path):
    # popularity reads the batch size as a number (len(batch)): torch.export fixes it
    from bstrec.export_onnx import ExportError

    run = bstrec.fit(tiny_dataset(), out=tmp_path / "pop", model="popularity", log=None)
    with pytest.raises(
        ExportError, match="model popularity: the exported graph fixes the batch size"
    ):
        run.export_onnx(tmp_path / "out" / "pop.onnx")
    assert list((tmp_path / "out").iterdir()) == []


def test_the_parity_check_refuses_a_graph_that_scores_differently(run, tmp_path, monkeypatch):
    # break the exported copy's wide part: the check compares with the run's own model
    import bstrec.export_onnx as ex

    monkeypatch.setattr(ex, "DENSE_MAX_ITEMS", 0)
    monkeypatch.setattr(
        ex._PaddedRows, "weighted_rows", lambda self, last, w: torch.zeros(last.shape[0], self.size)
    )
    with pytest.raises(ex.ExportError, match="differ from PyTorch's by up to"):
        run.export_onnx(tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_rating_model_exports_with_its_fold_in_solve(tmp_path):
    """ONNX has no solve operator: the rating head's fold-in exports unrolled, and the
    exported scores equal PyTorch's for known users and typed histories."""
    rating = bstrec.fit(
        tiny_dataset(),
        out=tmp_path / "rating",
        log=None,
        progress=False,
        **{**TINY, "model__task": "rating", "model__rating_factors": 4},
    )
    assert rating.model.rating_wide.item_factors.abs().sum() > 0
    path = tmp_path / "rating.onnx"
    r = CliRunner().invoke(
        app, ["export", str(rating.path), "--format", "onnx", "--out", str(path), "--json"]
    )
    assert r.exit_code == 0, r.output
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    sess, model = onnx_session(path), rating.model
    model.freeze_catalog()
    worst = 0.0
    for batch in _histories(rating):
        with torch.no_grad():
            want = model.score_all(batch).numpy()
        got = sess.run(["scores"], _feed(sidecar, batch))[0]
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= 1e-4, worst
