"""The indexing steps: embed a library into the gallery store with a model, in parallel shards, and serve
the result only once it is complete (an alias swap). Used by the omniretriever-index pipeline (the champion
from the registry) and by the training pipeline after a promotion (the new champion, before it is deployed).

    fetch-champion ─► plan-index ─► ParallelFor shard: index-shard (GPU in the cluster) ─► publish-index

plan-index opens the model's galleries in the store and creates the collections the shards fill: a first
gallery or a rebuild gets a generation nobody searches yet. Each shard embeds the manifest's lines numbered
shard modulo shards (serving/library.py add_items), resumably: a retried shard redoes only its unfinished
items. publish-index swaps the model's aliases to that generation once every shard has succeeded. An empty
`store_uri` means no gallery: plan returns no shard and publish does nothing.

On Milvus Lite (a .db path, one process at a time) the shards take turns, each waiting for the store;
on a cluster they run at once.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Model, Output

from components.images import CPU_BASE_IMAGE, CPU_TARGET_IMAGE, CUDA_BASE_IMAGE, CUDA_TARGET_IMAGE


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def fetch_champion(model_uri: str, model: Output[Model], tracking_uri: str = "") -> str:
    """Download the registered model `model_uri` (models:/NAME@ALIAS or models:/NAME/VERSION) into `model`
    (a model directory), its weights checked against the registry; returns their sha256."""
    from pathlib import Path

    from registry.fetch import fetch_registered

    fetched = fetch_registered(model_uri, Path(model.path).parent / "download", tracking_uri=tracking_uri or None)
    Path(model.path).parent.mkdir(parents=True, exist_ok=True)
    fetched.model_dir.rename(model.path)
    model.metadata.update(name=fetched.name, version=fetched.version, weights_sha256=fetched.weights_sha256)
    return fetched.weights_sha256


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def plan_index(model: Input[Model], store_uri: str, views: list, shards: int = 4, rebuild: bool = False,
               index_type: str = "") -> list:
    """Open `model`'s galleries in the store and create the collections of `views` in the generation the
    shards fill: with `rebuild` a new one (or the unfinished rebuild, resumed), else the served one (a first
    gallery: a new one). Returns one {"shard", "shards", "generation"} per shard ([] without a store): the
    step's single output, which the ParallelFor iterates over."""
    from model.store import saved_config, weights_digest
    from serving.store import LIVE, REBUILD, GalleryStore, IndexConfig

    if not store_uri:
        return []
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    digest, dim = weights_digest(model.path), saved_config(model.path).embed_dim
    config = IndexConfig.named(index_type.upper()) if index_type else None
    with GalleryStore.open(store_uri, digest, config, generation=REBUILD if rebuild else LIVE, wait=600.0) as store:
        for view in views:
            store.ensure_view(view, dim)
        generation = store.generation
    print(f"gallery of model {digest[:16]} in {store_uri}: generation {generation}, "
          f"views {', '.join(views)}, {shards} shards")
    return [{"shard": i, "shards": shards, "generation": generation} for i in range(shards)]


@dsl.component(base_image=CUDA_BASE_IMAGE, target_image=CUDA_TARGET_IMAGE)
def index_shard(model: Input[Model], data: str, store_uri: str, views: list, plan: dict, split: str = "test",
                manifest: str = "", batch_size: int = 64, window: float = 0.0,
                stride: float = 0.0) -> NamedTuple("ShardOutputs", [("embedded", int), ("unchanged", int),
                                                                     ("rejected", int)]):
    """Embed shard plan["shard"] of plan["shards"] of the library (DATA's `split`, or `manifest`: a file or a
    validation report directory) into generation plan["generation"] of the model's galleries, without
    publishing it. Bad records are reported and skipped (their count returned), never failing the shard.
    `window`/`stride` 0: the model's windows."""
    from collections import namedtuple

    from serving.library import add_items

    shard, shards, generation = int(plan["shard"]), int(plan["shards"]), int(plan["generation"])
    report = add_items(model.path, data, list(views), store_uri, split=None if manifest else split,
                       manifest=manifest or None, batch_size=batch_size, window=window or None,
                       stride=stride or None, generation=generation, publish=False, wait=3600.0,
                       shard=(shard, shards))
    for r in report.rejects:
        print(f"skipped line {r.line} ({r.id}): {r.reason}")
    print(f"shard {shard}/{shards}: {report.embedded} embedded, {report.unchanged} unchanged, "
          f"{len(report.rejects)} skipped; entries " + ", ".join(f"{v} {n}" for v, n in report.entries.items()))
    return namedtuple("ShardOutputs", ["embedded", "unchanged", "rejected"])(
        report.embedded, report.unchanged, len(report.rejects))


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def publish_index(model: Input[Model], store_uri: str, plan: list) -> str:
    """Serve the generation plan-index planned (`plan`, its output) of the model's galleries: an alias swap per
    view; what it served before stays for searches in flight. Returns a line saying what is served ("" without
    a store)."""
    from model.store import weights_digest
    from serving.store import GalleryStore

    if not store_uri or not plan:
        return ""
    generation = int(plan[0]["generation"])
    with GalleryStore.open(store_uri, weights_digest(model.path), generation=generation, wait=600.0) as store:
        before = store.publish()
        counts = {v: store.count(v) for v in store.views}
    detail = (f"generation {generation} of model {store.weights_sha256[:16]} served from {store_uri}: "
              + ", ".join(f"{v} {items} items ({entries} entries)" for v, (entries, items) in counts.items())
              + (f"; generation {before} before" if before is not None else ""))
    print(detail)
    return detail
