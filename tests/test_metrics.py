import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.metrics import direction_metrics, per_query, rank_counts, rank_counts_reference
from model.evaluate import score_embeddings
from model.modalities import BENCH_VIEWS, DIRECTION_NAMES


def normed(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("n", [1, 7, 100, 513])
def test_constant_embeddings_score_chance(n):
    z = F.normalize(torch.ones(n, 8), dim=-1)
    m = direction_metrics(z, z, n_boot=50)
    assert m["R@1"] == pytest.approx(100.0 / n)
    assert m["R@5"] == pytest.approx(100.0 * min(5, n) / n) and m["R@10"] == pytest.approx(100.0 * min(10, n) / n)
    assert m["MnR"] == pytest.approx((n + 1) / 2) and m["MdR"] == pytest.approx((n + 1) / 2)
    assert m["MRR"] == pytest.approx(sum(1 / r for r in range(1, n + 1)) / n)


def test_identical_query_and_gallery_are_perfect():
    z = normed(200)
    m = direction_metrics(z, z, n_boot=50)
    assert m["R@1"] == 100.0 and m["MdR"] == 1.0 and m["MRR"] == pytest.approx(1.0) and m["NDCG@10"] == pytest.approx(1.0)


@pytest.mark.parametrize("max_elements", [1, 37, 1000, 1 << 24])
def test_blockwise_counts_equal_brute_force(max_elements):
    q, g = normed(301, seed=1), normed(301, seed=2)
    g[10:20] = g[0]  # exact duplicates in the gallery: ties
    q[50:60] = q[40]
    for got, ref in zip(rank_counts(q, g, max_elements=max_elements), rank_counts_reference(q, g)):
        assert torch.equal(got, ref)


def test_expected_metrics_match_explicit_enumeration_over_tie_orders():
    rng = np.random.default_rng(0)
    greater = torch.tensor(rng.integers(0, 30, 200))
    ties = torch.tensor(rng.integers(0, 15, 200))
    got = per_query(greater, ties)
    for i in range(200):
        ranks = np.arange(greater[i] + 1, greater[i] + ties[i] + 2)  # every rank the gold can take, equally likely
        assert got["R@1"][i] == pytest.approx(np.mean(ranks <= 1))
        assert got["R@10"][i] == pytest.approx(np.mean(ranks <= 10))
        assert got["rank"][i] == pytest.approx(ranks.mean())
        assert got["rr"][i] == pytest.approx(np.mean(1 / ranks))
        assert got["ndcg10"][i] == pytest.approx(np.mean(np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0)))


def test_bootstrap_interval_brackets_the_estimate():
    q = normed(300, seed=3)
    g = F.normalize(q + 0.9 * normed(300, seed=4), dim=-1)
    m = direction_metrics(q, g, n_boot=300)
    lo, hi = m["R@1_ci95"]
    assert lo <= m["R@1"] <= hi and hi - lo > 0


def test_score_embeddings_reports_all_twelve_and_the_averages():
    emb = {v: normed(50, seed=i) for i, v in enumerate(BENCH_VIEWS)}
    res = score_embeddings(emb, n_boot=20)
    assert list(res["directions"]) == list(DIRECTION_NAMES)
    single = np.mean([res["directions"][d]["R@1"] for d in DIRECTION_NAMES[:6]])
    dual = np.mean([res["directions"][d]["R@1"] for d in DIRECTION_NAMES[6:]])
    assert res["AVG-single"] == pytest.approx(single) and res["AVG-dual"] == pytest.approx(dual)
    assert res["AVG-all"] == pytest.approx((single + dual) / 2)


def test_mismatched_sizes_are_refused():
    with pytest.raises(ValueError, match="same number of items"):
        rank_counts(normed(5), normed(6))
