"""The omniretriever-index pipeline: embed a media library into the champion's gallery in a Milvus store,
in parallel shards, and serve it once complete.

    fetch-champion ─► plan-index ─► ParallelFor shard: index-shard (one GPU each) ─► publish-index

fetch-champion downloads the registered model `model_uri` (models:/omniretriever@champion by default) with
its weights checked; the rest is components/indexing.py. Run it on a schedule to add the library's new
items to the served gallery (an item already stored with the same content is not decoded again), or with
`rebuild` to re-embed the whole library into a new generation that replaces the served one in one alias
swap when every shard is in. The transformer serving the champion searches the store through those
aliases (`serve --index URI`), so it follows the swap without a restart.
"""

# No `from __future__ import annotations` here: kfp reads the pipeline function's annotations as types.
from typing import Any, Optional

from kfp import dsl

from pipelines.pipeline import (DEFAULT_NODE_SELECTOR, DEFAULT_TOLERATIONS, GALLERY_SECRET, GALLERY_VIEWS,
                                MLFLOW_SECRET_KEYS, WORKSPACE_MOUNT, Steps, _retry, _with_secret,
                                containerized_steps, index_on_cluster, index_tasks)

INDEX_PIPELINE_NAME = "omniretriever-index"


def build_index_pipeline(steps: Optional[Steps] = None, cluster: bool = True) -> Any:
    """The index pipeline over `steps` (containerized by default); `cluster` adds the Kubernetes settings."""
    s = steps or containerized_steps()

    @dsl.pipeline(name=INDEX_PIPELINE_NAME, description="OmniRetriever: embed a media library into the "
                  "champion's gallery in Milvus, in parallel shards, and serve it once complete.")
    def omniretriever_index(
        store_uri: str,
        data: str = f"{WORKSPACE_MOUNT}/library",
        split: str = "test",
        manifest: str = "",
        views: list = list(GALLERY_VIEWS),
        shards: int = 4,
        rebuild: bool = False,
        index_type: str = "",
        batch_size: int = 64,
        model_uri: str = "models:/omniretriever@champion",
        mlflow_tracking_uri: str = "http://mlflow.mlflow.svc.cluster.local:5000",
        gpus: int = 1,
        gpu_node_selector: dict = DEFAULT_NODE_SELECTOR,
        gpu_tolerations: list = DEFAULT_TOLERATIONS,
        workspace_pvc: str = "omniretriever-workspace",
        mlflow_secret: str = "omniretriever-mlflow",
        gallery_secret: str = GALLERY_SECRET,
    ) -> None:
        champion = s.fetch_champion(model_uri=model_uri, tracking_uri=mlflow_tracking_uri)
        tasks = index_tasks(s, champion.outputs["model"], data=data, split=split, manifest=manifest,
                            store_uri=store_uri, views=views, shards=shards, rebuild=rebuild, index_type=index_type,
                            batch_size=batch_size)
        for task in (champion, *tasks.all()):
            task.set_caching_options(False)  # the store changes between runs
        if cluster:
            _retry(champion)
            _with_secret(champion, mlflow_secret, MLFLOW_SECRET_KEYS)
            index_on_cluster(tasks, pvc=workspace_pvc, secret=gallery_secret, gpus=gpus,
                             node_selector=gpu_node_selector, tolerations=gpu_tolerations)

    return omniretriever_index
