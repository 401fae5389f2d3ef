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


@pytest.mark.parametrize("max_elements", [37, 256, 1000, 1 << 24])  # one query a block: 9 and 2 gallery blocks
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


def test_a_gallery_smaller_than_the_queries_is_refused():
    with pytest.raises(ValueError, match="the gallery must hold every query's gold: 6 queries, 5 gallery items"):
        rank_counts(normed(6), normed(5))


def test_gallery_rows_past_the_queries_are_distractors_only():
    torch.manual_seed(3)
    q, g = normed(7), normed(11)
    got = rank_counts(q, g, max_elements=16)  # several blocks over a non-square matrix
    ref = rank_counts_reference(q, g)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    brute = (q @ g.T > (q * g[:7]).sum(-1, keepdim=True) + 1e-5).sum(1)
    assert torch.equal(got[0], brute)
    m = direction_metrics(q, g, n_boot=10)
    assert m["n"] == 7 and m["n_gallery"] == 11 and m["chance_R@1"] == pytest.approx(100 / 11)


def test_partial_items_score_only_the_directions_they_can_be_queried_in():
    """Items 0-3 complete, 4-5 without audio, 6-7 without video: a direction queries the items holding both
    of its views and ranks them among every item holding its gallery view."""
    torch.manual_seed(4)
    n = 8
    emb = {v: normed(n) for v in BENCH_VIEWS}
    has_v = torch.tensor([True] * 6 + [False] * 2)
    has_a = torch.tensor([True] * 4 + [False] * 2 + [True] * 2)
    has = {v: (has_v if "v" in v else torch.ones(n, dtype=torch.bool)) & (has_a if "a" in v else True) for v in BENCH_VIEWS}
    for v in BENCH_VIEWS:  # what embed_views leaves in the rows it does not embed
        emb[v][~has[v]] = float("nan")
    res = score_embeddings(emb, n_boot=10, has=has)
    assert res["nonfinite_rows"] == dict.fromkeys(BENCH_VIEWS, 0)
    t2v, v2a, t2av = res["directions"]["t2v"], res["directions"]["v2a"], res["directions"]["t2av"]
    assert (t2v["n"], t2v["n_gallery"]) == (6, 6)
    assert (v2a["n"], v2a["n_gallery"]) == (4, 6)  # the audio-only items are distractors of the audio gallery
    assert (t2av["n"], t2av["n_gallery"]) == (4, 4)
    asked = has["v"] & has["a"]
    gallery = torch.cat([emb["a"][asked], emb["a"][has["a"] & ~asked]])
    assert v2a["R@1"] == pytest.approx(direction_metrics(emb["v"][asked], gallery, n_boot=10)["R@1"])
    assert "unscored" not in res and len(res["directions"]) == 12


def test_a_direction_no_item_can_be_queried_in_is_not_scored():
    n = 4
    emb = {v: normed(n) for v in BENCH_VIEWS}
    no = torch.zeros(n, dtype=torch.bool)
    has = {v: (no if "a" in v else torch.ones(n, dtype=torch.bool)) for v in BENCH_VIEWS}  # no item has audio
    res = score_embeddings(emb, n_boot=10, has=has)
    assert res["unscored"] == [d for d in DIRECTION_NAMES if "a" in d]
    assert set(res["directions"]) == {"t2v", "v2t"}
    assert res["AVG-single"] == pytest.approx((res["directions"]["t2v"]["R@1"] + res["directions"]["v2t"]["R@1"]) / 2)
    assert res["AVG-dual"] is None and res["AVG-all"] == res["AVG-single"]


# ---------------------------------------------------------------------------------------------------
# non-finite embeddings: a non-finite score is the lowest possible score


def test_a_diverged_model_scores_zero_not_perfect():
    nan = torch.full((24, 8), float("nan"))
    m = direction_metrics(nan, nan, n_boot=20)
    assert m["R@1"] == 0.0 and m["R@10"] == 0.0 and m["MdR"] == 24.0 and m["MnR"] == 24.0
    res = score_embeddings({v: nan for v in BENCH_VIEWS}, n_boot=20)
    assert res["AVG-all"] == 0.0 and res["nonfinite_rows"] == {v: 24 for v in BENCH_VIEWS}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_query_row_ranks_its_gold_last(bad):
    z = normed(50, seed=5)
    q = z.clone()
    q[7, 3] = bad
    g, e = rank_counts(q, z)
    assert (g[7], e[7]) == (49, 0)
    assert torch.equal(g[torch.arange(50) != 7], torch.zeros(49, dtype=torch.long))  # the others still rank first
    g, e = rank_counts(z, q)  # the same row broken in the gallery: its own query's gold ranks last
    assert (g[7], e[7]) == (49, 0)


def test_an_inf_gallery_row_never_beats_or_ties_another_gold():
    q = normed(40, seed=6)
    g = F.normalize(q + 0.8 * normed(40, seed=7), dim=-1)
    before = rank_counts(q, g)
    broken = g.clone()
    broken[11] = float("inf")  # q . inf would be +inf (or nan): the best score of every query if left alone
    greater, ties = rank_counts(q, broken)
    others = torch.arange(40) != 11
    assert torch.equal(greater[others], before[0][others]) and torch.equal(ties[others], before[1][others])
    assert (greater[11], ties[11]) == (39, 0)


@pytest.mark.parametrize("max_elements", [37, 256, 1000, 1 << 24])  # one query a block: 9 and 2 gallery blocks
@pytest.mark.parametrize("where", ["query", "gallery", "both"])
def test_blockwise_counts_equal_brute_force_with_non_finite_rows(max_elements, where):
    q, g = normed(301, seed=8), normed(301, seed=9)
    g[10:20] = g[0]  # ties, as in the finite case
    if where in ("query", "both"):
        q[[3, 150, 300]] = float("nan")
        q[44, 0] = float("inf")
    if where in ("gallery", "both"):
        g[[5, 150]] = float("inf")
        g[12, 2] = float("nan")  # one of the tied duplicates
        g[299, 1] = -float("inf")
    got, ref = rank_counts(q, g, max_elements=max_elements), rank_counts_reference(q, g)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    q_ok, g_ok = torch.isfinite(q).all(1), torch.isfinite(g).all(1)
    broken = ~(q_ok & g_ok)
    assert (got[0][broken] == 300).all() and (got[1][broken] == 0).all()
    per = per_query(*got)
    assert (per["R@1"][broken] == 0).all()


def brute_multi(q, g, q_item, g_item, eps=1e-5):
    """(g, e, m) by the definitions, one query at a time over the full score matrix."""
    s = q @ g.T
    out = []
    for i in range(len(q)):
        gold = g_item == q_item[i]
        best = s[i][gold].max()
        out.append((int(((s[i] > best + eps) & ~gold).sum()), int((((s[i] - best).abs() <= eps) & ~gold).sum()),
                    int((((s[i] - best).abs() <= eps) & gold).sum())))
    return [torch.tensor(c) for c in zip(*out)]


@pytest.mark.parametrize("max_elements", [50, 1 << 24])
def test_several_captions_per_item_count_like_brute_force(max_elements):
    from model.metrics import rank_counts_multi

    videos = normed(20, seed=5)
    captions = normed(60, seed=6)
    item = torch.arange(20).repeat_interleave(3)  # three captions an item
    captions[3:6] = captions[0]  # whole items tied with another's captions
    videos[7] = videos[2]
    for got, ref in zip(rank_counts_multi(captions, videos, item, torch.arange(20), max_elements=max_elements),
                        brute_multi(captions, videos, item, torch.arange(20))):  # t2v: every caption a query
        assert torch.equal(got, ref)
    for got, ref in zip(rank_counts_multi(videos, captions, torch.arange(20), item, max_elements=max_elements),
                        brute_multi(videos, captions, torch.arange(20), item)):  # v2t: any caption of the item a hit
        assert torch.equal(got, ref)


def test_several_tied_golds_are_scored_by_enumerating_every_tie_order():
    import itertools

    from model.metrics import per_query_multi

    rng = np.random.default_rng(1)
    cases = [(int(rng.integers(0, 12)), int(rng.integers(0, 6)), int(rng.integers(1, 4))) for _ in range(200)]
    got = per_query_multi(*(torch.tensor(c) for c in zip(*cases)), max_elements=64)  # several blocks
    for i, (g, e, m) in enumerate(cases):
        ranks = np.array([g + 1 + order.index(1) for order in set(itertools.permutations([0] * e + [1] * m))], float)
        assert got["R@1"][i] == pytest.approx(np.mean(ranks <= 1)) and got["R@5"][i] == pytest.approx(np.mean(ranks <= 5))
        assert got["R@10"][i] == pytest.approx(np.mean(ranks <= 10)) and got["rank"][i] == pytest.approx(ranks.mean())
        assert got["rr"][i] == pytest.approx(np.mean(1 / ranks))
        assert got["ndcg10"][i] == pytest.approx(np.mean(np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0)))


def test_constant_embeddings_with_several_captions_score_chance_both_ways():
    from model.metrics import direction_metrics_multi

    z = F.normalize(torch.ones(40, 8), dim=-1)
    item = torch.arange(10).repeat_interleave(4)
    t2v = direction_metrics_multi(z, z[:10], item, torch.arange(10), n_boot=10)
    assert t2v["R@1"] == pytest.approx(10.0) and t2v["n"] == 40 and t2v["n_items"] == 10
    v2t = direction_metrics_multi(z[:10], z, torch.arange(10), item, n_boot=10)
    assert v2t["R@1"] == pytest.approx(10.0) and v2t["chance_R@1"] == pytest.approx(10.0)  # 4 golds in 40 rows
    assert v2t["MnR"] == pytest.approx(1 + 36 / 5)  # g = 0, e = 36, m = 4: E[X] = e / (m + 1)
    with pytest.raises(ValueError, match="items \\[10\\] have none"):
        direction_metrics_multi(z[:11], z, torch.arange(11), item, n_boot=10)


def test_one_caption_an_item_scores_as_before():
    from model.metrics import direction_metrics_multi

    q, g = normed(30, seed=8), normed(30, seed=9)
    one, multi = direction_metrics(q, g, n_boot=20), direction_metrics_multi(q, g, torch.arange(30), torch.arange(30), n_boot=20)
    assert all(one[k] == multi[k] for k in ("R@1", "R@5", "R@10", "MdR", "MnR", "MRR", "NDCG@10", "R@1_ci95"))
