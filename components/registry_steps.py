"""Registry steps, in the CPU image: register the trained model as the challenger, then the gate that
promotes it to champion or not. A model that is not promoted is an outcome, not an error."""

from typing import NamedTuple, Optional

from kfp import dsl
from kfp.dsl import Markdown, Output

from components.images import CPU_BASE_IMAGE, CPU_TARGET_IMAGE


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def register_model(run_id: str, name: str = "omniretriever", tracking_uri: str = "") -> NamedTuple(
        "RegisterOutputs", [("version", str), ("avg_all", float), ("aliases", str)]):
    """Register the model logged by MLflow run `run_id` as a new version of `name`, aliased challenger."""
    from collections import namedtuple

    from registry.registry import register

    registered = register(run_id, name=name, tracking_uri=tracking_uri or None)
    outputs = namedtuple("RegisterOutputs", ["version", "avg_all", "aliases"])
    return outputs(str(registered.version), float(registered.avg_all), ",".join(sorted(registered.aliases or [])))


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def gate_model(decision: Output[Markdown], name: str = "omniretriever", min_gain: Optional[float] = None,
               max_drop: Optional[float] = None, floor: Optional[float] = None, rules: list = [],
               tracking_uri: str = "") -> bool:
    """Compare the challenger of `name` with its champion on the 12 directions: promote it (alias
    champion) when its AVG-all R@1 gains at least `min_gain` points and no direction's R@1 drops by
    more than `max_drop` points; a first champion needs AVG-all of at least `floor`; `rules` add public
    benchmark directions ("clotho.t2a >= 15", "msrvtt.t2v drop <= 2", registry.registry.GateRule). A threshold left
    unset is the gate's default (registry.registry.DEFAULT_*). Returns whether it was promoted (the single
    return value, because the pipeline branches on it); `decision` is the comparison in Markdown, its
    metadata the challenger, the champion before and the reasons."""
    from pathlib import Path

    from components.reports import gate_markdown
    from registry.registry import DEFAULT_FLOOR, DEFAULT_MAX_DROP, DEFAULT_MIN_GAIN, promote

    result = promote(name, DEFAULT_MIN_GAIN if min_gain is None else min_gain,
                     DEFAULT_MAX_DROP if max_drop is None else max_drop, DEFAULT_FLOOR if floor is None else floor,
                     tracking_uri=tracking_uri or None, rules=[str(r) for r in rules or []])
    Path(decision.path).write_text(gate_markdown(result))
    decision.metadata.update(promoted=bool(result.promoted), challenger=str(result.challenger),
                             champion_before=str(result.champion_before or ""),
                             reasons="; ".join(str(r) for r in (result.reasons or [])))
    return bool(result.promoted)
