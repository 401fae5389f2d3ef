"""The evaluation step: the 12-direction OmniRetriever-Bench on the test split, in the CPU image."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components.images import CPU_BASE_IMAGE, CPU_TARGET_IMAGE


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def evaluate_model(model: Input[Model], data: str, metrics: Output[Metrics], results: Output[Artifact],
                   split: str = "test", run_id: str = "", tracking_uri: str = "") -> NamedTuple(
        "EvaluationOutputs", [("avg_all", float), ("avg_single", float), ("avg_dual", float)]):
    """Score the trained model on every direction of `split`. `results` is a directory holding
    results.json (all metrics of the 12 directions) and results.png; `metrics` carries R@1 of each
    direction and the three averages for the pipeline UI. With `run_id`, the results are also logged
    to that MLflow run (the one training created)."""
    from collections import namedtuple
    from pathlib import Path

    from model.evaluate import evaluate

    def _number(value: float | None) -> float:  # an average as a step output: NaN when none of its kind was scored
        return float("nan") if value is None else float(value)

    out = Path(results.path)
    out.mkdir(parents=True, exist_ok=True)
    scores = evaluate(model.path, data, split, out / "results.json", progress=False)
    for name, m in scores["directions"].items():
        metrics.log_metric(f"{name}_R@1", float(m["R@1"]))
    for key in ("AVG-single", "AVG-dual", "AVG-all"):
        if scores[key] is not None:  # None: the split holds no item for any direction of that kind
            metrics.log_metric(key, float(scores[key]))
    results.metadata.update(split=split, n_items=int(scores["n_items"]), avg_all=_number(scores["AVG-all"]),
                            unscored=list(scores.get("unscored", [])))
    if run_id:  # the evaluation logger `omniretriever evaluate` uses, into the training run
        from model.hooks import TrackingOptions
        from registry.evaluation_log import evaluation_logger

        evaluation_logger(scores, out / "results.json", TrackingOptions(tracking_uri=tracking_uri or None, run_id=run_id))
    outputs = namedtuple("EvaluationOutputs", ["avg_all", "avg_single", "avg_dual"])
    return outputs(_number(scores["AVG-all"]), _number(scores["AVG-single"]), _number(scores["AVG-dual"]))


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def evaluate_benchmarks(model: Input[Model], benchmarks: list, results: Output[Artifact], run_id: str = "",
                        tracking_uri: str = "") -> int:
    """Score the trained model on each public benchmark of `benchmarks` ("NAME=DATA_DIR", a dataset `data
    import` wrote, e.g. "clotho=/workspace/benchmarks/clotho"), by its protocol (model.benchmarks), each
    logged to the training run under its own prefix ("clotho.t2a.R1", ...) so the gate can name it.
    `results` holds results-NAME.json and .png per benchmark. Returns how many were scored (0 for none)."""
    from pathlib import Path

    from model.benchmarks import benchmark
    from model.evaluate import evaluate

    entries = []
    for entry in benchmarks:
        name, sep, data = str(entry).partition("=")
        if not sep or not data:
            raise ValueError(f"benchmarks entry {entry!r}: expected NAME=DATA_DIR, e.g. clotho=/workspace/benchmarks/clotho")
        entries.append((benchmark(name.strip()), data.strip()))  # every entry checked before any is scored
    out = Path(results.path)
    out.mkdir(parents=True, exist_ok=True)
    scored = {}
    for bench, data in entries:
        path = out / f"results-{bench.name}.json"
        scores = evaluate(model.path, data, bench.split, path, progress=False, benchmark=bench.name)
        scored[bench.name] = scores["AVG-all"]
        if run_id:
            from model.hooks import TrackingOptions
            from registry.evaluation_log import evaluation_logger

            evaluation_logger(scores, path, TrackingOptions(tracking_uri=tracking_uri or None, run_id=run_id))
    results.metadata.update(benchmarks=scored)
    return len(entries)
