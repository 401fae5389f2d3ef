"""model.parallel: the one process pool with a progress bar (decoding, generation, probing)."""

from __future__ import annotations

import os
from concurrent.futures.process import BrokenProcessPool

import pytest

from model.errors import MediaError
from model.parallel import chunk_size, map_with_progress


def square(x: int) -> int:
    return x * x


def refuse_seven(x: int) -> int:
    if x == 7:
        raise MediaError(f"clip-{x}.mp4", "not a media file")
    return x


def die_on_three(x: int) -> int:
    if x == 3:
        os._exit(1)  # a worker killed outright (as by the OOM killer)
    return x


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_in_the_order_of_the_jobs(workers):
    assert list(map_with_progress(square, list(range(50)), workers=workers, label="t", progress=False)) == \
        [x * x for x in range(50)]


def test_a_worker_error_stops_the_map_with_that_typed_error():
    with pytest.raises(MediaError, match=r"clip-7.mp4: not a media file"):
        list(map_with_progress(refuse_seven, list(range(20)), workers=2, label="t", progress=False))


def test_a_worker_that_dies_stops_the_map_instead_of_hanging():
    with pytest.raises(BrokenProcessPool):
        list(map_with_progress(die_on_three, list(range(8)), workers=2, label="t", progress=False))


def test_chunks_stay_small_enough_to_balance():
    assert chunk_size(4300, 2) == 16 and chunk_size(10, 2) == 1 and chunk_size(0, 4) == 1
