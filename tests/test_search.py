"""Search through the real servers finds the gold item of training pairs, in all 12 directions.

A model trained a little longer than tiny_run (24 steps of 16 clips on tiny_data's 48 training clips) is
exported and served with a gallery of the training split in the six benchmark views, embedded into a
Milvus Lite store by `index add` and searched there by the transformer. For each direction the query
view of 24 training items goes to omniretriever-search in one gRPC request, against the direction's
gallery view; the gold item (the same clip) must be in the top 5 far more often than chance
(5/48 = 10%: what a random or constant model gets).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from model.manifest import read_split, resolve_media
from model.modalities import BENCH_VIEWS, DIRECTION_NAMES, DIRECTIONS, VIEWS, A, T, V
from model.train import TrainConfig, train
from serving.client import split_url
from serving.launcher import LocalEndpoint
from serving.repository import build_repository
from serving.tensors import AUDIO, IDS, SEARCH_MODEL, TEXT, VIDEO

TOP_K = 5
QUERIES = 24
NAMES = {T: TEXT, V: VIDEO, A: AUDIO}


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("search-run") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model on a busy machine: one thread avoids contention (several times faster)
    try:
        # Every token and the queried caption in every step: 24 steps are too few for token dropping or
        # caption sampling to pay off, and the check is about the served search finding the training pairs
        # a model has learnt, not about the recipe.
        train(TrainConfig(data=tiny_data, out=out, steps=24, batch_size=16, warmup_steps=3, checkpoint_every=24,
                          workers=1, token_keep=1.0, unmasked_steps=0.0, alt_texts=False), progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def endpoint(trained, tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("search-serving")
    repo = build_repository(trained, root / "repo")
    store = root / "train.db"  # written by another process: a process keeps a Milvus Lite store it opened
    views = [arg for view in BENCH_VIEWS for arg in ("--view", view)]
    added = subprocess.run([sys.executable, "-m", "omniretriever", "index", "add", "--model", str(trained), "--data",
                            str(tiny_data), "--split", "train", "--uri", str(store), *views, "--workers", "1"],
                           capture_output=True, text=True, timeout=600)
    assert added.returncode == 0, added.stderr[-3000:]
    with LocalEndpoint(repo, index=store, startup_timeout=300) as ep:
        yield ep


@pytest.fixture(scope="module")
def train_items(tiny_data):
    return [(r.id, r.text.encode(), resolve_media(tiny_data, r.video).read_bytes(),
             resolve_media(tiny_data, r.audio).read_bytes()) for r in read_split(tiny_data, "train")]


def search(endpoint, items, query_view: str, gallery: str) -> list[list[str]]:
    """Top-k ids for each item's `query_view`, from one request to the search model."""
    client = grpcclient.InferenceServerClient(split_url(endpoint.grpc_url)[1])
    inputs = []
    for modality in VIEWS[query_view]:
        column = {T: 1, V: 2, A: 3}[modality]
        tensor = grpcclient.InferInput(NAMES[modality], [len(items)], "BYTES")
        tensor.set_data_from_numpy(np.array([item[column] for item in items], dtype=object))
        inputs.append(tensor)
    result = client.infer(SEARCH_MODEL, inputs, parameters={"top_k": TOP_K, "gallery": gallery})
    return [[i.decode() for i in row] for row in result.as_numpy(IDS)]


def test_gold_item_is_in_the_top_k_in_every_direction(endpoint, train_items):
    queries = train_items[:QUERIES]
    recall = {}
    for name in DIRECTION_NAMES:
        direction = DIRECTIONS[name]
        hits = search(endpoint, queries, direction.query, direction.gallery)
        recall[name] = float(np.mean([item[0] in top for item, top in zip(queries, hits)]))
    chance = TOP_K / len(train_items)
    print("R@5 online:", {k: round(v, 2) for k, v in recall.items()}, f"chance {chance:.2f}")
    assert np.mean(list(recall.values())) >= 0.35, recall
    assert min(recall.values()) >= 0.15, recall
