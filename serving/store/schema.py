"""The layout of a store: collection names and properties, the fields of a view's rows and of the ledger,
index configuration, and the string literals a filter expression may hold."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from serving.index import UNKNOWN
from serving.store.engine import StoreError

PREFIX = "omniretriever"
FORMAT = "omniretriever-store-v3"  # v2: collections by generation, served through aliases; v3: entries' captions
CAPTIONS = {"omniretriever-store-v2": False, FORMAT: True}  # the formats read: whether entries record a caption
LEDGER = "items"  # the ledger collection's suffix (never a view name)
IMPORTED = "imported"  # the content hash of entries imported from an index file (never a sha256)
MAX_TOP_K = 16384  # Milvus's largest search limit
MAX_ID, MAX_URI, MAX_NAME = 1024, 4096, 1024  # VARCHAR lengths: item ids, media paths, split and source names
MAX_CAPTION = 8000  # VARCHAR bytes of a caption: 2,000 characters (a query's limit) of up to 4 UTF-8 bytes
CHUNK = 512  # rows per upsert, ids per `in [...]` filter
# Reads that must see this client's own writes (the ledger before a write, counts, removals, exports) ask for
# Strong consistency: a Milvus cluster's default, Bounded, may answer from a snapshot a few seconds old, which
# misses entries just written (a re-added item's old windows would stay beside its new ones). Searches keep the
# collection's Bounded: a Strong query waits for the next time tick (200 ms on Milvus 2.3). Lite is always strong.
OWN_WRITES = {"consistency_level": "Strong"}
INDEX_TYPES = ("FLAT", "AUTOINDEX", "HNSW", "IVF_FLAT")
METRICS = ("COSINE", "IP")
PARAMS = {"HNSW": ({"M": 16, "efConstruction": 200}, {"ef": 128}),  # (build, search) params of IndexConfig.named
          "IVF_FLAT": ({"nlist": 1024}, {"nprobe": 32})}
HIT_FIELDS = ["item_id", "start", "end", "modalities", "media_uri"]
PROP_DIGEST, PROP_FORMAT, PROP_VIEW = "omniretriever.weights_sha256", "omniretriever.format", "omniretriever.view"
PROP_GENERATION = "omniretriever.generation"


@dataclass(frozen=True)
class IndexConfig:
    """How a view's embeddings are indexed, fixed when its collection is created."""

    index_type: str = "FLAT"  # FLAT (exact; the Lite default), AUTOINDEX, HNSW (the cluster default), IVF_FLAT
    metric: str = "COSINE"  # COSINE or IP: the same ranking on unit embeddings; scores are cosines either way
    build: dict = field(default_factory=dict)  # index build params: HNSW {"M", "efConstruction"}, IVF_FLAT {"nlist"}
    search: dict = field(default_factory=dict)  # search params: HNSW {"ef"} (raised to top_k), IVF_FLAT {"nprobe"}

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise StoreError(f"index type {self.index_type!r} is not one of {', '.join(INDEX_TYPES)}")
        if self.metric not in METRICS:
            raise StoreError(f"metric {self.metric!r} is not one of {', '.join(METRICS)}")

    @classmethod
    def named(cls, index_type: str, metric: str = "COSINE") -> "IndexConfig":
        """An index type with its usual parameters (PARAMS)."""
        build, search = PARAMS.get(index_type, ({}, {}))
        return cls(index_type, metric, dict(build), dict(search))

    @classmethod
    def default(cls, engine: str) -> "IndexConfig":
        """Exact search on Lite (a library on one machine); HNSW on a cluster."""
        return cls.named("FLAT" if engine == "lite" else "HNSW")


@dataclass(frozen=True)
class ItemMeta:
    """What a store row records of the item it belongs to, beside the entry itself."""

    media_uri: str = ""  # the media path as the manifest gives it (relative to the data root); "" unknown
    split: str = ""
    source: str = ""  # the manifest or dataset name
    duration: float = UNKNOWN  # seconds
    content_hash: str = IMPORTED
    caption: str = ""  # what the search page shows with a hit (display_caption); "" unknown


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    view: str  # a view name, or LEDGER
    weights_sha256: str
    dim: int
    index_type: str
    metric: str
    generation: int = 1
    live: bool = False  # the alias of its model and view points at it: what searches read
    captions: bool = True  # its entries record their item's caption (format v3; v2 collections do not)


def collection_name(weights_sha256: str, view: str, generation: int) -> str:
    """The collection of a model's `view` (or LEDGER) in one generation of its galleries."""
    return f"{alias_name(weights_sha256, view)}_g{generation}"


def alias_name(weights_sha256: str, view: str) -> str:
    """The alias through which a model's `view` (or LEDGER) is served: it names the live generation's collection."""
    return f"{PREFIX}_{weights_sha256[:16]}_{view}"


def entry_key(item_id: str, start: float) -> str:
    """The primary key of an entry: the item and where the entry starts, to the millisecond."""
    return f"{item_id}@{float(start):.3f}"


def check_item_id(item_id: str) -> None:
    """An id the store can hold and name in a filter; StoreError otherwise."""
    if len(item_id.encode("utf-8")) > MAX_ID:
        raise StoreError(f"item id {item_id[:40]!r}… is over {MAX_ID} bytes")
    if any(ord(c) < 32 for c in item_id):
        raise StoreError(f"item id {item_id!r} holds a control character, which a filter expression cannot name")


def literal(text: str) -> str:
    """`text` as a Milvus expression string literal (Milvus takes JSON's escapes, but not \\u)."""
    check_item_id(text)
    return json.dumps(text, ensure_ascii=False)


def in_filter(fld: str, values: Iterable[str]) -> str:
    return f"{fld} in [{', '.join(literal(v) for v in values)}]"


def chunks(seq: list, size: int = CHUNK) -> Iterator[list]:
    for i in range(0, len(seq), size):
        yield seq[i: i + size]


def collections_of(client) -> list[CollectionInfo]:
    """Every collection of this project in the store (others are left alone)."""
    out = []
    for name in sorted(client.list_collections()):
        if not name.startswith(PREFIX + "_"):
            continue
        desc = client.describe_collection(name)
        props = desc.get("properties", {})
        if PROP_FORMAT not in props:
            continue  # not made by this module
        if props[PROP_FORMAT] not in CAPTIONS:
            raise StoreError(f"collection {name}: format {props.get(PROP_FORMAT)!r}, expected {FORMAT!r}: an "
                             "older release wrote it; drop it and add the library again")
        dim = next((f["params"]["dim"] for f in desc["fields"] if f["name"] in ("embedding", "marker")), 0)
        view, digest = props[PROP_VIEW], props[PROP_DIGEST]
        index = client.describe_index(name, "embedding") if view != LEDGER else {}
        aliases = client.list_aliases(name).get("aliases", [])
        out.append(CollectionInfo(name, view, digest, int(dim), index.get("index_type", ""),
                                  index.get("metric_type", ""), int(props[PROP_GENERATION]),
                                  alias_name(digest, view) in aliases, CAPTIONS[props[PROP_FORMAT]]))
    return out


def schema_of(kind: str, dim: int, captions: bool = True):
    from pymilvus import DataType, MilvusClient

    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=MAX_ID + 16)
    s.add_field("item_id", DataType.VARCHAR, max_length=MAX_ID)
    s.add_field("content_hash", DataType.VARCHAR, max_length=64)
    s.add_field("ingest_time", DataType.INT64)
    if kind == LEDGER:  # a collection needs a vector: the ledger's is a constant
        s.add_field("marker", DataType.FLOAT_VECTOR, dim=2)
        s.add_field("view", DataType.VARCHAR, max_length=8)
        s.add_field("entries", DataType.INT64)
        return s
    s.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    s.add_field("media_uri", DataType.VARCHAR, max_length=MAX_URI)
    s.add_field("start", DataType.DOUBLE)
    s.add_field("end", DataType.DOUBLE)
    s.add_field("split", DataType.VARCHAR, max_length=MAX_NAME)
    s.add_field("source", DataType.VARCHAR, max_length=MAX_NAME)
    s.add_field("duration", DataType.DOUBLE)
    s.add_field("modalities", DataType.VARCHAR, max_length=8)
    if captions:
        s.add_field("caption", DataType.VARCHAR, max_length=MAX_CAPTION)
    return s


def display_caption(text: str | None) -> str:
    """A record's caption as a store row keeps it for display: at most MAX_CAPTION UTF-8 bytes (a longer one is
    cut at a character and ends in an ellipsis; the embedding is the whole caption's, as the tokenizer reads it)."""
    text = text or ""
    if len(text.encode()) <= MAX_CAPTION:
        return text
    cut = text.encode()[: MAX_CAPTION - 3].decode(errors="ignore")
    return cut + "…"
