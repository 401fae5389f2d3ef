"""What a search of the store returns: hits in a stable order, padded to one width."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.index import UNKNOWN, Hits


@dataclass(frozen=True)
class StoreHits(Hits):
    """Hits plus each hit's media URI and caption. A row with fewer hits than the others (a filter matching
    fewer entries, an approximate index) is padded with id "", score -inf."""

    uris: np.ndarray  # object (B, k)
    captions: np.ndarray  # object (B, k); "" where the store records none



TIE = 1e-6  # scores this close count as equal: Milvus's float32 dot products of one vector differ by row (1 ulp)


def primary_key(hit: dict) -> str:
    """A search hit's primary key: pymilvus's Hit.id (Milvus 2.4+ and Lite name it by the field, "pk"; Milvus 2.3
    returns no field name, and pymilvus then calls it "id"); a plain dict's "pk"."""
    return hit.id if hasattr(hit, "id") else hit["pk"]


def tie_ordered(hits: list[dict]) -> list[dict]:
    """Best first; a run of hits whose scores lie within TIE of the run's best, in primary-key order."""
    ranked = sorted(hits, key=lambda h: -h["distance"])
    out: list[dict] = []
    while ranked:
        n = next((j for j, h in enumerate(ranked) if ranked[0]["distance"] - h["distance"] > TIE), len(ranked))
        out += sorted(ranked[:n], key=primary_key)
        ranked = ranked[n:]
    return out


def hits_of(rows: list[list[dict]]) -> StoreHits:
    """StoreHits from Milvus's hit lists, padded to the longest."""
    k = max((len(r) for r in rows), default=0)
    pad = {"distance": -np.inf, "entity": {"item_id": "", "start": UNKNOWN, "end": UNKNOWN, "modalities": "",
                                           "media_uri": "", "caption": ""}}
    full = [r + [pad] * (k - len(r)) for r in rows]

    def col(f: str, dtype) -> np.ndarray:  # (B, k)
        return np.array([[h["entity"].get(f, "") for h in r] for r in full], dtype).reshape(len(rows), k)

    scores = np.array([[h["distance"] for h in r] for r in full], np.float32).reshape(len(rows), k)
    return StoreHits(col("item_id", object), scores, col("start", np.float32), col("end", np.float32),
                     col("modalities", object), col("media_uri", object), col("caption", object))

