"""The model registry: register evaluated runs, promote through a gate, roll back, list.

Aliases of a registered model (default name "omniretriever"):
    challenger  the version registered last, waiting for the gate
    champion    the version in service: models:/omniretriever@champion
    previous    the champion before the last promotion (what `rollback` restores)

A version's tags hold the evaluation it was registered with (AVG-all, AVG-single, AVG-dual and
"<direction>.R1" for the 12 directions, the split and gallery size), its lineage (run_id,
data_version, git_commit, pipeline_run_id), so the gate compares versions without re-reading runs, and
what it needs to load (registry/logged_model.py `backbone_tags`, read from the verified artifacts): its
backbone ("tiny" or "qwen2_5_omni") and, for a pretrained one, the base checkpoint it was trained on
(base_checkpoint: the path at training; base_sha256: the weights' digest; base_layout), which the
logged model never contains. `registry show` prints them, and how to load the version over a base that
has moved.

The gate (`gate`, used by `promote`): the challenger's AVG-all must gain at least `min_gain` R@1 points
over the champion's, and no direction's R@1 may drop by more than `max_drop` points. Rules may add public
benchmark directions (`GateRule`: "clotho.t2a >= 15", "msrvtt.t2v drop <= 2"), judged on the
"<benchmark>.<direction>.R1" tags a version is registered with when its run was scored on them. With no champion
yet, the challenger is promoted if its AVG-all reaches `floor`. Both versions must have been scored on
the same split and gallery size, and have the same backbone and base checkpoint (base_sha256): a
challenger over another base needs that base where the champion is served, so it is promoted only when
the caller says so (allow_base_change, `promote --allow-base-change`; the change is noted in the
decision and in the "gate" tag). Passing moves champion to the challenger, keeps the old champion as
previous (and in the new champion's "previous_champion" tag, so rollbacks chain) and removes the
challenger alias; failing changes nothing. A challenger that already is the champion is refused (it
would make previous the champion itself and lose the real previous), and so is a rollback to a
previous that is the champion; neither writes anything.

All or nothing, also when killed: see registry/aliases.py (a write-ahead journal).

Concurrency: register, promote and rollback read the aliases and write them while holding a file
lock (beside the sqlite database; for a tracking server, in the temp directory, so it serialises the
processes of one machine), and decide on aliases read after the lock is taken. Before writing, the
aliases are read once more and the change is abandoned if they moved (for writers the lock does not
cover, e.g. other machines sharing a tracking server); after writing they are checked again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from model.modalities import DIRECTION_NAMES
from registry.aliases import (CHALLENGER, CHAMPION, JOURNAL_TAG, KILL_AFTER_ENV, PREVIOUS, Journal, RegistryError,  # noqa: F401  (re-exported)
                              aliases_of, check_state, commit, complete_interrupted, count_write, journal_of, managed,
                              raw_aliases, resolved_aliases)
from registry.evaluation_log import AVERAGES
from registry.logged_model import BACKBONE_TAG, BASE_CHECKPOINT_TAG, BASE_DIGEST_TAG, MODEL_URI_TAG, WEIGHTS_TAG
from registry.store import TrackingError, client, existing_run, sqlite_path

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

MODEL_NAME = "omniretriever"
DEFAULT_MIN_GAIN = 0.0  # R@1 points of AVG-all the challenger must gain
DEFAULT_MAX_DROP = 2.0  # R@1 points any one direction may lose
DEFAULT_FLOOR = 1.0  # AVG-all a first champion needs (chance is 0.1 on the default 1,000-item gallery)
LOCK_TIMEOUT_S = 120.0
DELAY_ENV = "OMNIRETRIEVER_PROMOTE_DELAY_S"  # seconds between deciding and writing (to test races)
LINEAGE = ("data_version", "git_commit", "pipeline_run_id")
# what a version is registered with and judged on: the averages and each direction's R@1, named as in its
# tags ("AVG-all", "t2v.R1"); a run holds them as "<split>.<key>"
DIRECTION_R1 = {d: f"{d}.R1" for d in DIRECTION_NAMES}
GATE_METRICS = (*AVERAGES, *DIRECTION_R1.values())
# a public benchmark's R@1 per direction, when the run was scored on it (`evaluate --benchmark NAME`): its
# run metric and the version's tag are both "<benchmark>.<direction>.R1" (only what it scored)
BENCHMARK_METRIC = re.compile(r"^(?P<bench>[a-z0-9-]+)\.(?P<direction>" + "|".join(DIRECTION_NAMES) + r")\.R1$")
_RULE = re.compile(r"^\s*(?P<bench>[a-z0-9-]+)\.(?P<direction>[a-z0-9]+)\s*(?:(?P<floor>>=)|drop\s*<=)\s*"
                   r"(?P<value>[0-9]+(?:\.[0-9]*)?)\s*$")


@dataclass(frozen=True)
class GateRule:
    """A benchmark direction the gate also judges: the challenger's R@1 there is at least `value` ("clotho.t2a
    >= 15"), or drops by at most `value` points from the champion's ("clotho.t2a drop <= 2")."""

    benchmark: str
    direction: str
    kind: str  # "floor" or "drop"
    value: float

    @property
    def metric(self) -> str:
        return f"{self.benchmark}.{self.direction}.R1"

    def __str__(self) -> str:
        return f"{self.benchmark}.{self.direction} {'>=' if self.kind == 'floor' else 'drop <='} {self.value:g}"


def parse_rule(text: str) -> GateRule:
    """'clotho.t2a >= 15' or 'msrvtt.t2v drop <= 2' -> GateRule; RegistryError naming what is wrong."""
    from model.benchmarks import BENCHMARKS

    m = _RULE.match(text or "")
    if m is None:
        raise RegistryError(f"gate rule {text!r}: expected 'BENCHMARK.DIRECTION >= R1' or 'BENCHMARK.DIRECTION drop <= "
                            "POINTS', e.g. 'clotho.t2a >= 15'")
    if m["bench"] not in BENCHMARKS:
        raise RegistryError(f"gate rule {text!r}: unknown benchmark {m['bench']!r} (one of {', '.join(BENCHMARKS)})")
    if m["direction"] not in DIRECTION_NAMES:
        raise RegistryError(f"gate rule {text!r}: unknown direction {m['direction']!r} (one of {', '.join(DIRECTION_NAMES)})")
    return GateRule(m["bench"], m["direction"], "floor" if m["floor"] else "drop", float(m["value"]))


@dataclass
class RegisteredVersion:
    """One version of a registered model, with the evaluation and lineage it was registered with."""

    name: str
    version: str
    run_id: str
    avg_all: float
    aliases: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # "AVG-*" and "<direction>.R1"
    split: str = "test"
    n_items: int | None = None
    model_uri: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def base(self) -> tuple[str, str | None]:
        """(backbone, base_sha256) as registered. A version registered before backbones were tagged is a tiny
        one (the only backbone there was), so a registry's existing champion keeps comparing with new tiny runs."""
        return self.tags.get(BACKBONE_TAG, "tiny"), self.tags.get(BASE_DIGEST_TAG)

    def describe_base(self) -> str:
        """The backbone and the base it needs, e.g. "tiny" or "qwen2_5_omni over base sha256 1a2b3c4d5e6f"."""
        backbone, digest = self.base
        return backbone if digest is None else f"{backbone} over base sha256 {digest[:12]}"


@dataclass
class GateRow:
    """One line of the gate's comparison: a direction's R@1, or AVG-all."""

    metric: str
    challenger: float
    champion: float | None
    delta: float | None
    rule: str
    ok: bool


@dataclass
class GateDecision:
    """What the gate decided and why: `rows` compare every metric, `reasons` list each rule that failed."""

    promoted: bool
    challenger: str
    champion_before: str | None
    reasons: list[str]
    rows: list[GateRow]
    champion_after: str | None = None
    notes: list[str] = field(default_factory=list)  # what passed only because the caller allowed it
    min_gain: float = DEFAULT_MIN_GAIN
    max_drop: float = DEFAULT_MAX_DROP
    floor: float = DEFAULT_FLOOR


# ---------------------------------------------------------------------------------------------------
# reading runs and versions


def evaluation_of(run, split: str = "test") -> dict[str, float]:
    """AVG-single/dual/all and every direction's R@1 of a run's `split` evaluation; refuses partial results."""
    metrics = run.data.metrics
    run_id = run.info.run_id
    if not any(k.startswith(f"{split}.") for k in metrics):
        raise RegistryError(f"run {run_id} has no evaluation results for split {split!r}: score it first with "
                            f"`omniretriever evaluate --model RUN --split {split} --run-id {run_id}`")
    missing = [k.removesuffix(".R1") for k in GATE_METRICS if f"{split}.{k}" not in metrics]
    if missing:
        raise RegistryError(f"run {run_id}: the {split!r} evaluation lacks {', '.join(missing)} "
                            f"(expected R@1 of all 12 directions and the three averages)")
    values = {k: metrics[f"{split}.{k}"] for k in GATE_METRICS}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise RegistryError(f"run {run_id}: the {split!r} evaluation has non-finite {', '.join(bad)}")
    return values


def logged_model_uri(run) -> str:
    """The models:/m-... URI of the model a training run logged."""
    uri = run.data.tags.get(MODEL_URI_TAG)
    if uri:
        return uri
    outputs = getattr(getattr(run, "outputs", None), "model_outputs", None) or []
    if outputs:
        return f"models:/{outputs[-1].model_id}"
    raise RegistryError(f"run {run.info.run_id} has no logged model: it was not trained with tracking "
                        "(train without --no-track)")


def verify_model(model_uri: str, expected_sha256: str | None) -> dict[str, str]:
    """Download a logged model and prove its artifacts load: the saved model loads (a pretrained backbone over
    its base checkpoint, found as model.store.load_model finds it) and embeds a caption to finite vectors, and
    the weights' checksum matches the one recorded when the model was logged. Returns its backbone_tags."""
    import numpy as np

    from model.inference import Embedder
    from model.store import weights_digest
    from registry.logged_model import backbone_tags, download_model_dir

    with tempfile.TemporaryDirectory(prefix="omniretriever-verify-") as tmp:
        try:
            model_dir = download_model_dir(model_uri, tmp)
            embedder = Embedder(model_dir)
            embedding = embedder.embed([{"text": "a check that the model loads"}])
            actual, needs = weights_digest(model_dir), backbone_tags(embedder.loaded)
        except Exception as exc:  # any failure to read the artifacts means they cannot be served
            raise RegistryError(f"{model_uri}: the logged model's artifacts do not load "
                                f"({type(exc).__name__}: {str(exc)[:300]})") from None
    if expected_sha256 and actual != expected_sha256:
        raise RegistryError(f"{model_uri}: model.safetensors does not match the checksum recorded when it was logged "
                            f"({actual[:12]}... != {expected_sha256[:12]}...): the artifact is corrupted")
    if not np.isfinite(embedding).all():
        raise RegistryError(f"{model_uri}: the logged model embeds to non-finite values")
    return needs


def version_info(mv, aliases: dict[str, str], pending_tags: dict[str, str] | None = None) -> RegisteredVersion:
    """A registry ModelVersion -> RegisteredVersion (metrics from its tags, `pending_tags` over them)."""
    tags = {**(mv.tags or {}), **(pending_tags or {})}
    metrics = {}
    for key in (*GATE_METRICS, *(k for k in tags if BENCHMARK_METRIC.match(k))):
        try:
            metrics[key] = float(tags[key])
        except (KeyError, ValueError):
            continue
    n_items = tags.get("n_items", "")
    return RegisteredVersion(
        name=mv.name, version=str(mv.version), run_id=tags.get("run_id", mv.run_id or ""),
        avg_all=metrics.get("AVG-all", float("nan")), aliases=sorted(a for a, v in aliases.items() if v == str(mv.version)),
        metrics=metrics, split=tags.get("split", ""), n_items=int(n_items) if n_items.isdigit() else None,
        model_uri=tags.get("model_uri", ""), tags=tags)


def _registered(mlflow_client: "MlflowClient", name: str):
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_registered_model(name)
    except MlflowException:
        raise RegistryError(f"no registered model named {name!r} in {mlflow_client.tracking_uri}: "
                            "register a run first (`omniretriever registry register RUN_ID`)") from None


def _version(mlflow_client: "MlflowClient", name: str, version: str, aliases: dict[str, str]) -> RegisteredVersion:
    return version_info(mlflow_client.get_model_version(name, version), aliases)


# ---------------------------------------------------------------------------------------------------
# the lock


def lock_path(uri: str, name: str) -> Path:
    """Beside a sqlite database; otherwise in the temp directory, one per (store, model name)."""
    key = hashlib.sha256(f"{uri}\n{name}".encode()).hexdigest()[:16]
    db = sqlite_path(uri)
    if db is not None:
        return db.with_name(f"{db.name}.registry-{key}.lock")
    return Path(tempfile.gettempdir()) / f"omniretriever-registry-{key}.lock"


@contextmanager
def registry_lock(uri: str, name: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise alias changes of one registered model (see the module docstring)."""
    from filelock import FileLock, Timeout

    path = lock_path(uri, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path), timeout=timeout):
            yield
    except Timeout:
        raise RegistryError(f"another process has held the registry lock {path} for over {timeout:.0f} s; "
                            "try again when it finishes") from None


def _pause_before_writing() -> None:
    """Wait $OMNIRETRIEVER_PROMOTE_DELAY_S seconds (unset: none): widens the race window so tests can race."""
    try:
        delay = float(os.environ.get(DELAY_ENV) or 0)
    except ValueError:
        raise RegistryError(f"${DELAY_ENV}={os.environ[DELAY_ENV]!r} is not a number of seconds") from None
    if delay > 0:
        time.sleep(delay)


def _check_unchanged(mlflow_client: "MlflowClient", name: str, seen: dict[str, str]) -> None:
    now = aliases_of(mlflow_client, name)
    if now != seen:
        raise RegistryError(f"the aliases of {name!r} changed while deciding ({seen} -> {now}); nothing was "
                            "changed: run the command again")


# ---------------------------------------------------------------------------------------------------
# register


def register(run_id: str, name: str = MODEL_NAME, *, split: str = "test", tracking_uri: str | None = None) -> RegisteredVersion:
    """Register the model a run logged as a new version of `name` with alias challenger, its `split`
    evaluation and lineage as tags. Everything is checked before the registry is touched: the run exists,
    it was evaluated on all 12 directions, its model artifacts load."""
    from mlflow.exceptions import MlflowException

    check_name(name)
    mlflow_client = client(tracking_uri)
    try:
        run = existing_run(mlflow_client, run_id)
    except TrackingError as exc:
        raise RegistryError(str(exc)) from None
    metrics = evaluation_of(run, split)
    model_uri = logged_model_uri(run)
    needs = verify_model(model_uri, run.data.tags.get(WEIGHTS_TAG))
    tags = {**_version_tags(run, split, metrics, model_uri), **needs}
    with registry_lock(mlflow_client.tracking_uri, name):
        _ensure_registered_model(mlflow_client, name)
        complete_interrupted(mlflow_client, name)
        mv = mlflow_client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags,
                                                model_id=model_uri.removeprefix("models:/"))
        count_write()
        try:
            mlflow_client.set_registered_model_alias(name, CHALLENGER, mv.version)  # one write: atomic
        except MlflowException:
            mlflow_client.delete_model_version(name, mv.version)
            raise
        count_write()
        return _version(mlflow_client, name, str(mv.version), aliases_of(mlflow_client, name))


def _version_tags(run, split: str, metrics: dict[str, float], model_uri: str) -> dict[str, str]:
    run_tags = run.data.tags
    tags = {k: repr(v) for k, v in metrics.items()}
    tags.update({k: repr(v) for k, v in run.data.metrics.items() if BENCHMARK_METRIC.match(k) and math.isfinite(v)})
    tags.update(run_id=run.info.run_id, split=split, n_items=run_tags.get(f"{split}.n_items", ""), model_uri=model_uri,
                registered_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    tags.update({k: run_tags.get(k, "unknown") for k in LINEAGE})
    return tags


def _ensure_registered_model(mlflow_client: "MlflowClient", name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        mlflow_client.create_registered_model(name, description="OmniRetriever any-to-any audio-video-text encoder; "
                                                                "aliases champion / challenger / previous")
        count_write()


# ---------------------------------------------------------------------------------------------------
# the gate


def gate(challenger: RegisteredVersion, champion: RegisteredVersion | None, min_gain: float = DEFAULT_MIN_GAIN,
         max_drop: float = DEFAULT_MAX_DROP, floor: float = DEFAULT_FLOOR, allow_base_change: bool = False,
         rules: tuple[GateRule, ...] = ()) -> GateDecision:
    """Decide (without touching the registry) whether `challenger` may replace `champion`. A challenger with
    another backbone or base checkpoint is refused unless `allow_base_change` (then it is noted). `rules`
    judge benchmark directions too: a floor always, a drop against a champion (with none yet it is noted)."""
    base = dict(challenger=challenger.version, champion_before=champion.version if champion else None,
                min_gain=min_gain, max_drop=max_drop, floor=floor)
    if champion is None:
        ok = challenger.avg_all >= floor
        row = GateRow("AVG-all", challenger.avg_all, None, None, f">= floor {floor:.2f}", ok)
        reasons = [] if ok else [f"AVG-all {challenger.avg_all:.2f} is below the floor {floor:.2f} (--floor)"]
        rows, notes = [row], []
        _judge_rules(rules, challenger, None, rows, reasons, notes)
        return GateDecision(promoted=not reasons, reasons=reasons, rows=rows, notes=notes, **base)
    reasons = _comparable(challenger, champion)
    notes = []
    changed = _base_change(challenger, champion)
    if changed:
        (notes if allow_base_change else reasons).append(
            changed + ("" if allow_base_change else ": serve the new base first, then promote with --allow-base-change"))
    rows = []
    gain = challenger.avg_all - champion.avg_all
    rows.append(GateRow("AVG-all", challenger.avg_all, champion.avg_all, gain, f"gain >= {min_gain:.2f}", gain >= min_gain))
    if gain < min_gain:
        reasons.append(f"AVG-all gained {gain:+.2f} ({champion.avg_all:.2f} -> {challenger.avg_all:.2f}), "
                       f"less than the required {min_gain:.2f} (--min-gain)")
    for d in DIRECTION_NAMES:
        key = DIRECTION_R1[d]
        new, old = challenger.metrics.get(key, float("nan")), champion.metrics.get(key, float("nan"))
        delta = new - old
        ok = delta >= -max_drop  # NaN (a missing metric) fails
        rows.append(GateRow(f"{d} R@1", new, old, delta, f"drop <= {max_drop:.2f}", ok))
        if not ok:
            reasons.append(f"{d}: R@1 dropped {-delta:.2f} ({old:.2f} -> {new:.2f}), more than the allowed {max_drop:.2f} "
                           "(--max-drop)" if math.isfinite(delta) else f"{d}: R@1 missing on one side")
    _judge_rules(rules, challenger, champion, rows, reasons, notes)
    return GateDecision(promoted=not reasons, reasons=reasons, rows=rows, notes=notes, **base)


def _judge_rules(rules: tuple[GateRule, ...], challenger: RegisteredVersion, champion: RegisteredVersion | None,
                 rows: list[GateRow], reasons: list[str], notes: list[str]) -> None:
    """Add each rule's row, and its reason when it fails: a benchmark the challenger was not scored on fails."""
    for rule in rules:
        new = challenger.metrics.get(rule.metric)
        if new is None:
            rows.append(GateRow(f"{rule.benchmark}.{rule.direction} R@1", float("nan"), None, None, str(rule), False))
            reasons.append(f"{rule}: challenger v{challenger.version} has no {rule.metric} (score the run with "
                           f"`omniretriever evaluate --benchmark {rule.benchmark}` before registering it)")
            continue
        if rule.kind == "floor":
            ok = new >= rule.value
            rows.append(GateRow(f"{rule.benchmark}.{rule.direction} R@1", new, None, None, str(rule), ok))
            if not ok:
                reasons.append(f"{rule}: R@1 is {new:.2f}")
            continue
        old = champion.metrics.get(rule.metric) if champion is not None else None
        if old is None:
            rows.append(GateRow(f"{rule.benchmark}.{rule.direction} R@1", new, None, None, str(rule), True))
            notes.append(f"{rule}: {'no champion' if champion is None else f'champion v{champion.version} has no {rule.metric}'}"
                         " to compare with")
            continue
        delta = new - old
        ok = delta >= -rule.value
        rows.append(GateRow(f"{rule.benchmark}.{rule.direction} R@1", new, old, delta, str(rule), ok))
        if not ok:
            reasons.append(f"{rule}: R@1 dropped {-delta:.2f} ({old:.2f} -> {new:.2f})")


def _base_change(challenger: RegisteredVersion, champion: RegisteredVersion) -> str:
    """What changes in what serving must provide (backbone, base checkpoint) when the challenger replaces the
    champion; "" when nothing does."""
    if challenger.base == champion.base:
        return ""
    return (f"different base: challenger v{challenger.version} is {challenger.describe_base()} "
            f"(base_checkpoint {challenger.tags.get(BASE_CHECKPOINT_TAG, '-')}), champion v{champion.version} is "
            f"{champion.describe_base()} (base_checkpoint {champion.tags.get(BASE_CHECKPOINT_TAG, '-')})")


def _comparable(challenger: RegisteredVersion, champion: RegisteredVersion) -> list[str]:
    """Reasons the two evaluations cannot be compared (different split or gallery size)."""
    if (challenger.split, challenger.n_items) != (champion.split, champion.n_items):
        return [f"not comparable: challenger v{challenger.version} was scored on {challenger.split!r} "
                f"({challenger.n_items} items), champion v{champion.version} on {champion.split!r} ({champion.n_items} items)"]
    return []


def check_gate_options(min_gain: float, max_drop: float, floor: float) -> None:
    """Refuse thresholds that make no sense, naming each."""
    bad = []
    if not math.isfinite(min_gain):
        bad.append(f"--min-gain={min_gain!r} (must be a finite number)")
    if not (math.isfinite(max_drop) and max_drop >= 0):
        bad.append(f"--max-drop={max_drop!r} (must be finite and >= 0)")
    if not (math.isfinite(floor) and floor >= 0):
        bad.append(f"--floor={floor!r} (must be finite and >= 0)")
    if bad:
        raise RegistryError(f"invalid gate option(s): {', '.join(bad)}")


def check_name(name: str) -> str:
    """A registered model name: letters, digits, '_', '-', '.' (it goes into registry queries)."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
        raise RegistryError(f"invalid model name {name!r}: use 1-100 letters, digits, '_', '-' or '.'")
    return name


def _evaluated(version: RegisteredVersion, role: str) -> RegisteredVersion:
    missing = [k for k in GATE_METRICS if k not in version.metrics]
    if missing:
        raise RegistryError(f"{role} {version.name} v{version.version} has no evaluation tags ({', '.join(missing[:4])}"
                            f"{', ...' if len(missing) > 4 else ''}): register versions with `omniretriever registry register`")
    return version


# ---------------------------------------------------------------------------------------------------
# promote, rollback, list


def promote(name: str = MODEL_NAME, min_gain: float = DEFAULT_MIN_GAIN, max_drop: float = DEFAULT_MAX_DROP,
            floor: float = DEFAULT_FLOOR, *, tracking_uri: str | None = None,
            lock_timeout: float = LOCK_TIMEOUT_S, allow_base_change: bool = False,
            rules: tuple[GateRule, ...] | list[str] = ()) -> GateDecision:
    """Run the gate on the challenger; on a pass move champion to it (old champion -> previous), all or
    nothing (see the module docstring). A challenger that already is the champion is refused, and so is one
    over another backbone or base checkpoint unless `allow_base_change`."""
    check_gate_options(min_gain, max_drop, floor)
    check_name(name)
    rules = tuple(r if isinstance(r, GateRule) else parse_rule(r) for r in rules)
    mlflow_client = client(tracking_uri)
    _registered(mlflow_client, name)
    with registry_lock(mlflow_client.tracking_uri, name, lock_timeout):
        complete_interrupted(mlflow_client, name)
        seen = aliases_of(mlflow_client, name)  # read under the lock
        if CHALLENGER not in seen:
            holder = f" (version {seen[CHAMPION]} is champion)" if CHAMPION in seen else ""
            raise RegistryError(f"{name!r} has no version with alias {CHALLENGER!r}{holder}: register a run first")
        if seen[CHALLENGER] == seen.get(CHAMPION):
            raise RegistryError(f"alias {CHALLENGER!r} and alias {CHAMPION!r} of {name!r} both point to version "
                                f"{seen[CHAMPION]}: it already is the champion, so there is nothing to promote (promoting "
                                f"it would make {PREVIOUS!r} the champion itself and lose the real previous); nothing was "
                                "changed. Register a new run as the challenger")
        challenger = _evaluated(_version(mlflow_client, name, seen[CHALLENGER], seen), CHALLENGER)
        champion = _evaluated(_version(mlflow_client, name, seen[CHAMPION], seen), CHAMPION) if CHAMPION in seen else None
        decision = gate(challenger, champion, min_gain, max_drop, floor, allow_base_change, rules)
        if decision.promoted:
            journal = _promotion(name, seen, challenger, champion, decision)
            _pause_before_writing()
            _check_unchanged(mlflow_client, name, seen)
            commit(mlflow_client, name, journal)
        decision.champion_after = aliases_of(mlflow_client, name).get(CHAMPION)
    return decision


def _promotion(name: str, seen: dict[str, str], challenger: RegisteredVersion, champion: RegisteredVersion | None,
               decision: GateDecision) -> Journal:
    """champion <- challenger, previous <- old champion (kept as it is when there was none), challenger removed;
    the new champion's tags record its previous champion, when and why."""
    before = managed(seen)
    after = {a: v for a, v in before.items() if a == PREVIOUS}
    after[CHAMPION] = challenger.version
    if champion is not None:
        after[PREVIOUS] = champion.version
    tags = {"previous_champion": champion.version if champion else "none",
            "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "gate": _gate_summary(decision)}
    check_state(name, after, f"promoting v{challenger.version}")
    return Journal("promote", before, managed(after), {challenger.version: tags})


def _gate_summary(decision: GateDecision) -> str:
    if decision.champion_before is None:
        return f"first champion: AVG-all {decision.rows[0].challenger:.2f} >= floor {decision.floor:.2f}"
    return (f"passed against v{decision.champion_before}: AVG-all {decision.rows[0].delta:+.2f} "
            f"(min gain {decision.min_gain:.2f}), no direction dropped more than {decision.max_drop:.2f}"
            + "".join(f"; allowed: {note}" for note in decision.notes))


def rollback(name: str = MODEL_NAME, *, tracking_uri: str | None = None, lock_timeout: float = LOCK_TIMEOUT_S) -> str:
    """Make `previous` the champion again, all or nothing; returns the restored version. `previous` then moves
    to the restored version's own previous champion (if it still exists), so rollbacks can be repeated. A
    previous that is the champion itself is refused."""
    check_name(name)
    mlflow_client = client(tracking_uri)
    _registered(mlflow_client, name)
    with registry_lock(mlflow_client.tracking_uri, name, lock_timeout):
        complete_interrupted(mlflow_client, name)
        seen = aliases_of(mlflow_client, name)
        if PREVIOUS not in seen:
            raise RegistryError(f"{name!r} has no version with alias {PREVIOUS!r}: nothing to roll back to "
                                f"(champion: {seen.get(CHAMPION, 'none')})")
        if seen[PREVIOUS] == seen.get(CHAMPION):
            raise RegistryError(f"alias {PREVIOUS!r} and alias {CHAMPION!r} of {name!r} both point to version "
                                f"{seen[CHAMPION]}: rolling back would not change the champion; nothing was changed. "
                                f"Point {PREVIOUS!r} at the version to restore")
        restored = _version(mlflow_client, name, seen[PREVIOUS], seen)
        older = restored.tags.get("previous_champion", "none")
        after = {**managed(seen), CHAMPION: restored.version}
        if older not in ("none", restored.version) and _exists(mlflow_client, name, older):
            after[PREVIOUS] = older
        else:
            del after[PREVIOUS]
        check_state(name, after, f"rolling back to v{restored.version}")
        tags = {seen[CHAMPION]: {"rolled_back_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}} if CHAMPION in seen else {}
        journal = Journal("rollback", managed(seen), managed(after), tags)
        _pause_before_writing()
        _check_unchanged(mlflow_client, name, seen)
        commit(mlflow_client, name, journal)
    return restored.version


def _exists(mlflow_client: "MlflowClient", name: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_model_version(name, version)
    except MlflowException:
        return False
    return True


def list_versions(name: str = MODEL_NAME, *, tracking_uri: str | None = None) -> list[RegisteredVersion]:
    """Every version of `name`, oldest first, with its aliases and evaluation."""
    check_name(name)
    mlflow_client = client(tracking_uri)
    registered_model = _registered(mlflow_client, name)
    journal = journal_of(registered_model)
    if journal is not None:
        log.warning("the %s of %r %s is not finished (killed, or still running): its aliases are shown as it "
                    "leaves them; the next register, promote or rollback completes it", journal.operation, name,
                    journal.describe().replace(": ", " (", 1) + ")")
    aliases = resolved_aliases(registered_model)
    pending = journal.version_tags if journal else {}
    versions = mlflow_client.search_model_versions(f"name = '{name}'")
    return sorted((version_info(mv, aliases, pending.get(str(mv.version))) for mv in versions), key=lambda v: int(v.version))


def show_version(name: str = MODEL_NAME, which: str = CHAMPION, *, tracking_uri: str | None = None) -> RegisteredVersion:
    """One version of `name` as list_versions reads it, by number or by alias (champion, challenger, previous)."""
    versions = list_versions(name, tracking_uri=tracking_uri)
    found = next((v for v in versions if which == v.version or which in v.aliases), None)
    if found is None:
        aliases = sorted({a for v in versions for a in v.aliases})
        raise RegistryError(f"{name!r} has no version or alias {which!r} (versions {', '.join(v.version for v in versions)}; "
                            f"aliases {', '.join(aliases) or 'none'})")
    return found
