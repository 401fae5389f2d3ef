"""Retrieval metrics for one direction, blockwise and tie-fair.

For query i the gold is gallery item i; a gallery may hold more items than there are queries (the items
a direction cannot query, e.g. those without the query's modality), which are distractors only. With
s_ij = q_i . g_j, let
    g_i = #{j : s_ij > s_ii + eps}            items strictly better than the gold
    e_i = #{j != i : |s_ij - s_ii| <= eps}     items tied with the gold
Under random tie-breaking the gold's rank is uniform on {g_i + 1, ..., g_i + e_i + 1}; every metric
is its expectation over that, so ties never flatter a model (a constant embedding scores chance):
    R@k     = clip((k - g) / (e + 1), 0, 1)          (percent)
    rank    = g + 1 + e / 2                          MdR = median, MnR = mean
    MRR     = (H(g + e + 1) - H(g)) / (e + 1)        H = harmonic numbers
    NDCG@10 = sum_{r=g+1}^{min(g+e+1, 10)} 1/log2(r + 1) / (e + 1)
eps absorbs float32 rounding between differently-shaped matrix products (scores lie in [-1, 1]).

Non-finite numbers never flatter either: a non-finite score is the lowest possible score. An
embedding (a row) holding a NaN or an inf is non-finite, and
  - a query whose own embedding, or whose gold gallery item's embedding, is non-finite (or whose gold
    score is) gets its gold ranked last: g = n - 1, e = 0, so R@k = 0 for k < n, below chance;
  - a non-finite gallery item j never beats or ties anyone else's gold: its scores sit below every
    finite score.
So a diverged model whose embeddings are all NaN scores R@1 = 0, not 100 (a NaN compares neither
greater than nor equal to anything, which would otherwise rank every gold first). Scores between
finite embeddings are used as computed.

`rank_counts` never holds more than query_block x gallery_block scores, so galleries of 10^6 items
fit in bounded memory; `rank_counts_reference` is the brute-force N x N version the tests compare with.
"""

from __future__ import annotations

import math

import numpy as np
import torch

TIE_EPS = 1e-5
EULER_GAMMA = 0.5772156649015329


def finite_rows(x: torch.Tensor) -> torch.Tensor:
    """bool (N,): which rows of an (N, E) embedding hold no NaN or inf."""
    return torch.isfinite(x).all(-1)


def _gold_last(greater: torch.Tensor, ties: torch.Tensor, broken: torch.Tensor,
               n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The counts with the gold of every `broken` query ranked last in a gallery of n (g = n - 1, e = 0)."""
    return greater.masked_fill(broken, n - 1), ties.masked_fill(broken, 0)


def rank_counts(query: torch.Tensor, gallery: torch.Tensor, *, max_elements: int = 1 << 24,
                eps: float = TIE_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, e) int64 (N,) for query (N, E) and gallery (M, E), M >= N, whose first N rows are the queries'
    golds, scored in blocks of <= max_elements. Non-finite rows rank as the module docstring says; their
    finiteness is found once, per row."""
    n, m = query.shape[0], gallery.shape[0]
    if m < n:
        raise ValueError(f"the gallery must hold every query's gold: {n} queries, {m} gallery items")
    qb = max(1, min(n, max_elements // min(m, 4096)))
    gb = max(1, min(m, max_elements // qb))
    gallery_ok = finite_rows(gallery)
    mask_gallery = not bool(gallery_ok.all())  # only then does a block need its broken columns masked
    greater = torch.zeros(n, dtype=torch.long)
    ties = torch.zeros(n, dtype=torch.long)
    gold_ok = torch.zeros(n, dtype=torch.bool)
    for q0 in range(0, n, qb):
        q = query[q0: q0 + qb]  # (b, E)
        gold = (q * gallery[q0: q0 + qb]).sum(-1, keepdim=True)  # (b, 1)
        gold_ok[q0: q0 + qb] = torch.isfinite(gold[:, 0])
        for g0 in range(0, m, gb):
            s = q @ gallery[g0: g0 + gb].T  # (b, gb)
            if mask_gallery:
                s.masked_fill_(~gallery_ok[None, g0: g0 + gb], -math.inf)
            greater[q0: q0 + qb] += (s > gold + eps).sum(1)
            ties[q0: q0 + qb] += ((s - gold).abs() <= eps).sum(1)
    broken = ~(gold_ok & finite_rows(query) & gallery_ok[:n])
    return _gold_last(greater, ties - 1, broken, m)  # ties - 1: the gold ties with itself


def rank_counts_reference(query: torch.Tensor, gallery: torch.Tensor, eps: float = TIE_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """The same counts from the full N x N score matrix (for tests and benchmarks only)."""
    n = query.shape[0]
    gallery_ok = finite_rows(gallery)
    raw = query @ gallery.T  # (N, M)
    gold = raw[:, :n].diagonal()[:, None]
    s = raw.masked_fill(~gallery_ok[None, :], -math.inf)
    counts = (s > gold + eps).sum(1), ((s - gold).abs() <= eps).sum(1) - 1
    return _gold_last(*counts, ~(torch.isfinite(gold[:, 0]) & finite_rows(query) & gallery_ok[:n]), gallery.shape[0])


def _harmonic(n: torch.Tensor) -> torch.Tensor:
    return torch.special.digamma(n.double() + 1) + EULER_GAMMA


_NDCG_CUM = torch.tensor([0.0] + list(np.cumsum([1 / math.log2(r + 1) for r in range(1, 11)])), dtype=torch.float64)


def per_query(greater: torch.Tensor, ties: torch.Tensor) -> dict[str, torch.Tensor]:
    """Expected per-query R@1/5/10 (0..1), rank, reciprocal rank and NDCG@10 under random tie-breaking."""
    g, e = greater.double(), ties.double()
    out = {f"R@{k}": ((k - g) / (e + 1)).clamp(0, 1) for k in (1, 5, 10)}
    out["rank"] = g + 1 + e / 2
    out["rr"] = (_harmonic(greater + ties + 1) - _harmonic(greater)) / (e + 1)
    hi = (greater + ties + 1).clamp(max=10)
    lo = greater.clamp(max=10)
    out["ndcg10"] = (_NDCG_CUM[hi] - _NDCG_CUM[lo]) / (e + 1)
    return out


def bootstrap_ci(values: torch.Tensor, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-query values (queries resampled with replacement)."""
    v = values.numpy()
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def direction_metrics(query: torch.Tensor, gallery: torch.Tensor, *, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """R@1/5/10 and their R@1 95% interval (percent), MdR, MnR, MRR, NDCG@10 for one direction; "n" queries,
    "n_gallery" items ranked (the first n of them the golds), chance R@1 = 100 / n_gallery."""
    q = per_query(*rank_counts(query.float(), gallery.float()))
    return {**summary(q, n_boot, seed), "n": int(query.shape[0]), "n_gallery": int(gallery.shape[0]),
            "chance_R@1": 100.0 / gallery.shape[0]}


def summary(q: dict[str, torch.Tensor], n_boot: int, seed: int) -> dict[str, float]:
    """The direction's figures from per-query values: R@1/5/10 and R@1's 95% interval (percent), MdR, MnR,
    MRR, NDCG@10."""
    lo, hi = bootstrap_ci(q["R@1"], n_boot, seed)
    return {
        "R@1": 100 * float(q["R@1"].mean()), "R@5": 100 * float(q["R@5"].mean()), "R@10": 100 * float(q["R@10"].mean()),
        "R@1_ci95": [100 * lo, 100 * hi],
        "MdR": float(np.median(q["rank"].numpy())), "MnR": float(q["rank"].mean()),
        "MRR": float(q["rr"].mean()), "NDCG@10": float(q["ndcg10"].mean()),
    }


# --- several captions per item -------------------------------------------------------------------------------
# Text->media with several captions: every caption is a query and its gold is its item (query_item says which).
# Media->text: the gallery holds every caption and a hit is any of the item's (gallery_item says whose each
# caption is); the rank is the first gold's. With s* the best gold's score,
#     g = #{non-gold j : s_j > s* + eps},  e = #{non-gold j : |s_j - s*| <= eps},  m = #{gold j : |s_j - s*| <= eps}
# and under random tie-breaking of the e + m tied rows the number X of non-golds before the first gold has
#     P(X >= x) = prod_{i < x} (e - i) / (e + m - i),
# which every metric takes its expectation over (m = 1 is the uniform case of per_query). A query whose own
# embedding, or whose every gold, is non-finite ranks its gold last (g = M - 1, e = 0, m = 1).


def rank_counts_multi(query: torch.Tensor, gallery: torch.Tensor, query_item: torch.Tensor, gallery_item: torch.Tensor,
                      *, max_elements: int = 1 << 24, eps: float = TIE_EPS
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g, e, m) int64 (N,) for query (N, E) against gallery (M, E), the golds of query i being the gallery
    rows j with gallery_item[j] == query_item[i] (at least one each), scored in blocks."""
    n, m_rows = query.shape[0], gallery.shape[0]
    if len(query_item) != n or len(gallery_item) != m_rows:
        raise ValueError(f"{len(query_item)} query items for {n} queries, {len(gallery_item)} gallery items for {m_rows} rows")
    held = set(gallery_item.tolist())
    lost = [int(i) for i in query_item.tolist() if i not in held]
    if lost:
        raise ValueError(f"the gallery must hold every query's gold: items {lost[:5]} have none")
    gallery_ok = finite_rows(gallery)
    qb = max(1, min(n, max_elements // max(m_rows, 1)))
    greater = torch.zeros(n, dtype=torch.long)
    ties = torch.zeros(n, dtype=torch.long)
    golds = torch.zeros(n, dtype=torch.long)
    broken = ~finite_rows(query)
    for q0 in range(0, n, qb):
        s = query[q0: q0 + qb] @ gallery.T  # (b, M)
        s = s.masked_fill(~gallery_ok[None, :], -math.inf)
        gold = query_item[q0: q0 + qb, None] == gallery_item[None, :]  # (b, M)
        best = s.masked_fill(~gold, -math.inf).max(1, keepdim=True).values  # (b, 1)
        near = (s - best).abs() <= eps
        greater[q0: q0 + qb] = ((s > best + eps) & ~gold).sum(1)
        ties[q0: q0 + qb] = (near & ~gold).sum(1)
        golds[q0: q0 + qb] = (near & gold).sum(1)
        broken[q0: q0 + qb] |= ~torch.isfinite(best[:, 0])
    greater, ties = _gold_last(greater, ties, broken, m_rows)
    return greater, ties, golds.masked_fill(broken, 1)


def per_query_multi(greater: torch.Tensor, ties: torch.Tensor, golds: torch.Tensor,
                    max_elements: int = 1 << 22) -> dict[str, torch.Tensor]:
    """per_query's expectations when `golds` of the tied rows are golds (the first of them counts). Rows with
    one tied gold, or no tie, are per_query's; the others are summed over X in blocks of <= max_elements."""
    out = per_query(greater, ties)
    rows = torch.nonzero((golds > 1) & (ties > 0)).flatten()
    if not len(rows):
        return out
    reach = int(ties[rows].max()) + 1  # X takes 0..e
    block = max(1, max_elements // (reach + 1))
    for b0 in range(0, len(rows), block):
        r = rows[b0: b0 + block]
        for key, value in _tied_golds(greater[r].double(), ties[r].double(), golds[r].double(), reach).items():
            out[key][r] = value
    return out


def _tied_golds(g: torch.Tensor, e: torch.Tensor, m: torch.Tensor, reach: int) -> dict[str, torch.Tensor]:
    steps = torch.arange(reach, dtype=torch.float64)
    terms = ((e[:, None] - steps) / (e[:, None] + m[:, None] - steps)).clamp(min=0)  # (b, reach)
    p_ge = torch.cat([torch.ones(len(e), 1, dtype=torch.float64), terms.cumprod(1)], dim=1)  # P(X >= 0..reach)
    p_eq = p_ge - torch.cat([p_ge[:, 1:], torch.zeros(len(e), 1, dtype=torch.float64)], dim=1)  # P(X = x)
    ranks = g[:, None] + 1 + torch.arange(reach + 1, dtype=torch.float64)[None, :]
    out = {f"R@{k}": (p_eq * (ranks <= k)).sum(1) for k in (1, 5, 10)}
    out["rank"] = g + 1 + e / (m + 1)
    out["rr"] = (p_eq / ranks).sum(1)
    out["ndcg10"] = (p_eq * torch.where(ranks <= 10, 1 / torch.log2(ranks + 1), torch.zeros_like(ranks))).sum(1)
    return out


def direction_metrics_multi(query: torch.Tensor, gallery: torch.Tensor, query_item: torch.Tensor,
                            gallery_item: torch.Tensor, *, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """direction_metrics with golds by item: several captions per item as queries (t2v) or as gallery rows
    (v2t, any of the item's captions a hit). "n" queries, "n_gallery" rows, "n_items" distinct gallery items."""
    q = per_query_multi(*rank_counts_multi(query.float(), gallery.float(), query_item, gallery_item))
    items = len(set(gallery_item.tolist()))
    per_item = len(gallery_item) / items
    return {**summary(q, n_boot, seed), "n": int(query.shape[0]), "n_gallery": int(gallery.shape[0]), "n_items": items,
            "chance_R@1": 100.0 * per_item / gallery.shape[0]}
