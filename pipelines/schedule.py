"""Scheduled retraining: create or update the pipeline's recurring run on a Kubeflow Pipelines server.

The recurring run lives in an experiment found by name (created when missing) and is found again by
its display name, so running `omniretriever pipeline schedule` twice updates the one schedule rather
than adding a second. KFP's v2beta1 API has no in-place update of a recurring run: an update creates
the new recurring run first and only then deletes the old one, so a failure never leaves the pipeline
unscheduled. The pipeline travels inline (the compiled IR YAML), with the cluster defaults it was
compiled with and any parameters given here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_EXPERIMENT = "omniretriever"
DEFAULT_JOB = "omniretriever-retrain"
DEFAULT_CRON = "0 0 3 * * *"  # every day at 03:00:00 (6 fields: seconds first)
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,#LW-]+$")
_CRON_NAMES = ("second", "minute", "hour", "day of month", "month", "day of week")


@dataclass(frozen=True)
class ScheduleResult:
    action: str  # created | updated
    experiment_id: str
    experiment_created: bool
    recurring_run_id: str
    replaced: tuple[str, ...]  # ids of the recurring runs this one replaced
    cron: str


def check_cron(expr: str) -> str:
    """The expression itself when it has KFP's 6 fields (second minute hour day-of-month month
    day-of-week); otherwise ValueError saying what is wrong."""
    parts = expr.split()
    if len(parts) != 6:
        raise ValueError(f"cron expression {expr!r} has {len(parts)} field(s); KFP needs 6: "
                         f"{' '.join(_CRON_NAMES)} (e.g. {DEFAULT_CRON!r}: daily at 03:00)")
    for name, part in zip(_CRON_NAMES, parts):
        if not _CRON_FIELD.match(part):
            raise ValueError(f"cron expression {expr!r}: the {name} field {part!r} has characters cron does not use")
    return " ".join(parts)


def _name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def ensure_experiment(client: Any, name: str, namespace: str | None = None) -> tuple[str, bool]:
    """(experiment id, created?) of the experiment called `name`, created when missing."""
    found = client.list_experiments(filter=_name_filter(name), namespace=namespace, page_size=10).experiments or []
    if found:
        return found[0].experiment_id, False
    return client.create_experiment(name=name, namespace=namespace).experiment_id, True


def find_recurring_runs(client: Any, experiment_id: str, job_name: str) -> list[Any]:
    response = client.list_recurring_runs(experiment_id=experiment_id, filter=_name_filter(job_name), page_size=100)
    return [r for r in (response.recurring_runs or []) if r.display_name == job_name]


def schedule(host: str, cron: str = DEFAULT_CRON, *, package: str | Path | None = None,
             experiment: str = DEFAULT_EXPERIMENT, job_name: str = DEFAULT_JOB, params: dict[str, Any] | None = None,
             namespace: str | None = None, token: str | None = None, max_concurrency: int = 1,
             client: Any = None) -> ScheduleResult:
    """Create (or replace) the recurring run `job_name` of the compiled pipeline on the KFP server at `host`."""
    from pipelines.compile import COMPILED

    cron = check_cron(cron)
    package = Path(package or COMPILED)
    if not package.is_file():
        raise FileNotFoundError(f"{package}: no compiled pipeline (run `omniretriever pipeline compile`)")
    if client is None:
        import kfp

        client = kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token)
    experiment_id, created = ensure_experiment(client, experiment, namespace)
    old = find_recurring_runs(client, experiment_id, job_name)
    new = client.create_recurring_run(experiment_id=experiment_id, job_name=job_name, cron_expression=cron,
                                      pipeline_package_path=str(package), params=params or {},
                                      max_concurrency=max_concurrency, no_catchup=True, enabled=True,
                                      description="Scheduled retraining of OmniRetriever (omniretriever pipeline schedule)")
    for run in old:
        client.delete_recurring_run(run.recurring_run_id)
    return ScheduleResult("updated" if old else "created", experiment_id, created, new.recurring_run_id,
                          tuple(r.recurring_run_id for r in old), cron)
