"""The benchmarks evaluation knows by name: the split a release's importer writes its test items to, and the
paper's zero-shot R@1 (percent) for the directions it reports, printed beside ours.

    omniretriever evaluate --model RUN --data data/clotho --benchmark clotho

Every benchmark is scored by the same protocol (model.evaluate): every caption a query in text->media,
any of an item's captions a hit in media->text, each item once in a media gallery, and the directions a
benchmark cannot be scored in (Clotho has no video) left out and listed as unscored, never zero. MSR-VTT's
1k-A protocol queries with one sentence a video (the JSFusion one, the manifest's "text"), so its
benchmark uses the main caption only. The
references are the paper's ("Any-to-Any Audio-Video-Text Retrieval via Fusion-as-Teacher Distillation",
2026, from its authors' evaluation docs), for its 7B model: a tiny model trained here is not expected to
come near them; they say where a pretrained backbone should land.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Benchmark:
    name: str
    split: str  # the split the importer writes the benchmark's test items to
    reference: dict[str, float] = field(default_factory=dict)  # direction or AVG-* -> the paper's R@1
    note: str = ""
    captions: str = "every"  # "every": each caption of an item queries (and is a hit); "main": its first only


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("omniretriever-bench", "test", {"AVG-single": 28.63, "AVG-dual": 41.05, "AVG-all": 34.84},
              "12 directions on 3,782 triples"),
    Benchmark("msrvtt", "test", {"t2v": 47.9}, "the 1k-A test split: one sentence a video", captions="main"),
    Benchmark("msvd", "test", {"t2v": 65.6}, "670 test clips, every caption a query; no audio"),
    Benchmark("didemo", "test", {"t2v": 45.1}, "paragraph retrieval: a video's descriptions joined"),
    Benchmark("vatex", "test", {"t2v": 58.7}, "English captions"),
    Benchmark("clotho", "test", {"t2a": 19.14}, "Clotho v2 evaluation split, 5 captions a clip; no video"),
    Benchmark("sounddescs", "test", {"t2a": 25.00}, "no video"),
    Benchmark("audiocaps", "test", {}, "the paper reports no AudioCaps figure"),
)}


def benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}: one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]
