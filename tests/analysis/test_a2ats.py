"""A²ATS calibration (rope_lab/analysis/a2ats*.py, kmeans.py): ||x L||² = x^T H x for the normalised H; with H = I
the query-aware k-means is plain k-means (scipy's ``kmeans2`` Lloyd iterations from the same seeds, scipy's ``vq``
assignment); query-aware codes beat plain k-means on the query-weighted error; a RoPE run calibrates end to end and
evaluates training-free with ``pe.name=a2ats``."""

from __future__ import annotations

import pytest
import torch

from rope_lab.analysis.a2ats_vq import EPSILON, QueryKeyCollector, build_codebooks, query_aware_factor
from rope_lab.analysis.kmeans import kmeans, kmeans_plus_plus, lloyd
from rope_lab.pe.variants.attention.a2ats_codebooks import assign_codes, gather_codes, keyspace_codebook


def _anisotropic(n=600, d=8, seed=0):
    """Keys and WRoPE queries whose energy sits in a few directions (as real queries do)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([8.0, 4.0] + [0.3] * (d - 2), dtype=torch.float64)
    q = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    k = torch.randn(n, d, generator=g, dtype=torch.float64) * scale.flip(0) * 0.5
    k = k + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return q, k


def test_cholesky_factor_turns_the_query_weighted_norm_into_a_euclidean_norm():
    q, k = _anisotropic()
    h = q.T @ q
    chol = query_aware_factor(h)
    normalised = h / (h**2).mean().sqrt() + EPSILON * torch.eye(8, dtype=torch.float64)
    torch.testing.assert_close(chol @ chol.T, normalised)
    assert torch.equal(chol, chol.tril())
    x = k[:50]
    torch.testing.assert_close(((x @ chol) ** 2).sum(-1), torch.einsum("nd,de,ne->n", x, normalised, x))


def test_identity_h_is_plain_kmeans_as_scipy_computes_it():
    vq = pytest.importorskip("scipy.cluster.vq")
    _, k = _anisotropic(n=400)
    chol = query_aware_factor(torch.eye(8, dtype=torch.float64))  # sqrt(sqrt(8) + 1e-6) I
    c = chol[0, 0]
    torch.testing.assert_close(chol, c * torch.eye(8, dtype=torch.float64))
    init = kmeans_plus_plus(k, 12, torch.Generator().manual_seed(0))
    ours = lloyd(k @ chol, init @ chol, max_iter=7, tol=0.0)  # tol 0: exactly 7 Lloyd steps, as kmeans2(iter=7)
    theirs, labels = vq.kmeans2(k.numpy(), init.numpy(), iter=7, minit="matrix", missing="warn")
    torch.testing.assert_close(keyspace_codebook(ours.centroids, chol), torch.from_numpy(theirs), rtol=1e-9,
                               atol=1e-9)
    codes = assign_codes(k[None, None], chol[None], ours.centroids[None])[0, 0]
    scipy_codes, _ = vq.vq(k.numpy(), theirs)
    assert torch.equal(codes, torch.from_numpy(scipy_codes).long())


def test_kmeans_assignments_are_nearest_centroids_and_lower_the_inertia():
    _, k = _anisotropic(n=300, seed=1)
    fit = kmeans(k, 10, seed=3)
    brute = torch.cdist(k, fit.centroids).argmin(-1)
    assert torch.equal(fit.labels, brute) and fit.iterations >= 1
    init = kmeans_plus_plus(k, 10, torch.Generator().manual_seed(3))
    assert fit.inertia <= float(torch.cdist(k, init).min(-1).values.pow(2).sum()) + 1e-9
    with pytest.raises(ValueError, match=r"codebook_size=500 for 300 vectors"):
        kmeans(k, 500)


def _query_weighted_error(q, k, book, layer=0):
    codes = assign_codes(k[None, None], book.cholesky[layer].double(), book.centroids[layer].double())
    space = keyspace_codebook(book.centroids[layer].double(), book.cholesky[layer].double())
    k_hat = gather_codes(space, codes)[0, 0]
    return float(((q @ (k - k_hat).T) ** 2).mean())


def test_query_aware_codes_beat_plain_kmeans_on_the_retrieval_score_error():
    q, k = _anisotropic(n=800, seed=2)
    collector = QueryKeyCollector(depth=1)
    collector(0, q[None, None].float(), k[None, None].float())  # one key head, one query head
    aware = build_codebooks(collector, 16, relative_pos=2048, query_aware=True)
    plain = build_codebooks(collector, 16, relative_pos=2048, query_aware=False)
    assert aware.centroids.shape == (1, 1, 16, 8) and aware.query_aware and not plain.query_aware
    assert _query_weighted_error(q, k, aware) < 0.7 * _query_weighted_error(q, k, plain)


def test_collector_pools_the_gqa_group_per_key_head():
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(2, 4, 5, 3, generator=g), torch.randn(2, 2, 5, 3, generator=g)
    c = QueryKeyCollector(depth=1)
    c(0, q, k)
    c(0, q, k)
    want = 2 * torch.stack([q[:, 2 * h : 2 * h + 2].reshape(-1, 3).double().T @ q[:, 2 * h : 2 * h + 2].reshape(-1, 3)
                            .double() for h in range(2)])
    torch.testing.assert_close(c.second_moment[0], want)
    assert c.layer_keys(0).shape == (2, 20, 3) and c.n_tokens == 20


def test_a_rope_run_calibrates_and_evaluates_training_free_as_a2ats(tmp_path):
    from rope_lab.analysis.a2ats import main
    from rope_lab.evaluate import evaluate
    from tests.test_train import train

    train(tmp_path, "trainer.max_steps=2", "trainer.val_check_interval=2")
    (run_dir,) = (tmp_path / "outputs" / "lm_longctx" / "rope").glob("*/*")
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    out = main(["--ckpt", ckpt, "--out", str(tmp_path / "cb.pt"), "--codebook-size", "8", "--tokens", "512",
                "--random-tokens", "128", "--length", "64", "--max-iter", "5"])
    metrics = evaluate(ckpt, {"pe.name": "a2ats", "+pe.codebooks": str(out), "+pe.topk": 0.1,
                              "+pe.local_window": 4, "task.eval_lengths": [64]})
    assert metrics["val/ppl@64"] > 1.0
    with pytest.raises(ValueError, match=r"calibrated with relative_pos=2048; set pe.relative_pos=2048"):
        evaluate(ckpt, {"pe.name": "a2ats", "+pe.codebooks": str(out), "+pe.relative_pos": 64})


def test_relative_score_error_is_the_mean_squared_error_over_explicit_query_key_pairs():
    from rope_lab.analysis.a2ats_vq import relative_score_error
    from rope_lab.pe.variants.attention.a2ats_codebooks import CodebookFile

    q, k = _anisotropic(n=300, seed=5)
    collector = QueryKeyCollector(depth=1)
    collector(0, q[None, None].float(), k[None, None].float())
    book = build_codebooks(collector, 8, relative_pos=2048, query_aware=True, max_iter=20)
    q32, k32 = q.float().double(), k.float().double()  # what the collector stored
    codes = assign_codes(k32[None, None], book.cholesky[0].double(), book.centroids[0].double())
    k_hat = gather_codes(keyspace_codebook(book.centroids[0].double(), book.cholesky[0].double()), codes)[0, 0]
    want = ((q32 @ (k32 - k_hat).T) ** 2).sum() / ((q32 @ k32.T) ** 2).sum()
    (got,) = relative_score_error(collector, book)
    assert abs(got - float(want)) < 1e-9
    exact = CodebookFile(k32[None, None, :, :].float(), torch.eye(8)[None, None], 2048, False, 300)
    assert relative_score_error(collector, exact)[0] < 1e-12  # every key its own centroid: no error


def test_the_seeded_study_evaluates_every_setting_on_one_trained_model_and_reuses_it(monkeypatch, tmp_path):
    """rope_lab.analysis.a2ats_study on a tiny LM: every setting gets ppl, codebook settings their held-out score
    error, and a second call of the same seed trains and calibrates nothing again."""
    import math

    from rope_lab.analysis import a2ats_study as s
    from rope_lab.analysis import study
    from tests.test_train import TINY

    monkeypatch.setattr(s, "LENGTH", 64)
    monkeypatch.setattr(s, "PPL", "val/ppl@64")
    monkeypatch.setattr(s, "CALIB_TOKENS", 512)
    monkeypatch.setattr(s, "MAX_ITER", 5)
    monkeypatch.setattr(s, "RELATIVE_POS", 32)
    monkeypatch.setattr(s, "WINDOW", 4)
    monkeypatch.setattr(s, "BUDGETS", {"full": 2})
    monkeypatch.setattr(s, "SETTINGS", {"full attention": s.Retrieval(), "window+sinks": s.Retrieval(topk=0.0),
                                        "A2ATS-8": s.Retrieval(0.25, 8, True), "plain-8": s.Retrieval(0.25, 8, False)})
    tiny = [o for o in TINY if not o.startswith(("task.train_length", "task.eval_lengths", "task.passkey"))]
    plain = s.train_overrides
    monkeypatch.setattr(s, "train_overrides", lambda steps, seed: [*tiny, *plain(steps, seed)])
    out = s.study_seed(seed=1, root=tmp_path)
    assert set(out) == {"full attention", "window+sinks", "A2ATS-8", "plain-8"}
    assert all(math.isfinite(v["val/ppl@64"]) and v["val/ppl@64"] > 1 for v in out.values())
    assert {k for k, v in out.items() if s.ERROR in v} == {"A2ATS-8", "plain-8"}
    assert out["A2ATS-8"]["val/ppl@64"] != out["full attention"]["val/ppl@64"]  # retrieval changed the attention
    assert "seed=1" in (tmp_path / "lm_seed1" / ".hydra" / "overrides.yaml").read_text()
    monkeypatch.setattr(study, "_run_child", lambda argv: pytest.fail(f"retrained: {argv}"))
    monkeypatch.setattr("rope_lab.analysis.a2ats.calibrate", lambda *a, **k: pytest.fail("recalibrated"))
    assert s.study_seed(seed=1, root=tmp_path) == out
