"""Data steps: fetch the dataset (when asked), validate its triples with Great Expectations, then
version what passed with DVC.

    pull-data ─► validate-data ─► [passed] version-data

All three run in the CPU image. Data travels as a path (a string parameter): the local dataset
directory, or in a cluster a directory on the workspace volume that `pull_data(pull=True)` fills from
the DVC remote. Nothing reaches the remote before it has passed validation: `version_data` (dvc add +
push) runs only on data that passed, and its version is the one the run's lineage records. A failed
validation is an outcome, not an error: `validate_data` returns passed=False and the pipeline skips
the rest.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Output

from components.images import CPU_BASE_IMAGE, CPU_TARGET_IMAGE


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def pull_data(data: str, remote: str = "", pull: bool = True) -> NamedTuple(
        "PullOutputs", [("action", str), ("md5", str), ("warning", str)]):
    """With `pull`, make `data` hold the version its .dvc file records: pull it from `remote`, or
    regenerate it from its recipe (`omniretriever data pull`). Data that cannot be made to match (a
    regeneration with other bytes, data changed after versioning) is used as it is, under its own version
    `md5`, and `warning` names the files that differ. Without `pull`, only check the dataset is in place."""
    from collections import namedtuple
    from pathlib import Path

    from dataset import versioning

    outputs = namedtuple("PullOutputs", ["action", "md5", "warning"])
    if not pull:
        if not (Path(data) / "manifests").is_dir():
            raise FileNotFoundError(f"{data}: no dataset here (no manifests/ directory), and pull is off")
        return outputs("in place", "", "")
    version = versioning.pull_data(data, remote=remote or None)
    for note in version.notes:
        print(f"note: {note}")
    if version.warning:
        print(f"warning: {version.warning}")
    return outputs(version.action, str(version.md5), version.warning or "")


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def validate_data(data: str, report: Output[HTML], max_rejected: float = 0.0, allow_partial: bool = False) -> bool:
    """Validate every triple of `data` with Great Expectations and return whether the data passed
    (no more than `max_rejected` of the rows fail; with `allow_partial`, items without video or without
    audio are valid). The HTML `report` shows the verdict, the failed
    expectations and the rows they name; its metadata carries the counts, `failures` (the failed checks
    in one line) and `details` (the directory with summary.json, validated.jsonl, rejected.jsonl and
    the GX data docs). The verdict is the single return value because the pipeline branches on it."""
    from pathlib import Path

    from components.reports import failures_line, validation_html
    from dataset.rules import Thresholds
    from dataset.validation import validate

    details = Path(report.path).parent / "validation"
    result = validate(data, details, max_rejected=max_rejected, thresholds=Thresholds(allow_partial=allow_partial))
    Path(report.path).write_text(validation_html(result, data))
    report.metadata.update(passed=bool(result.passed), total=int(result.total), validated=int(result.validated),
                           rejected=int(result.rejected), rejected_fraction=float(result.rejected_fraction),
                           failures=failures_line(result), details=str(details))
    return bool(result.passed)


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def version_data(data: str, remote: str = "") -> NamedTuple(
        "DataVersionOutputs", [("md5", str), ("nfiles", int), ("size", int), ("dvc_file", str)]):
    """Version `data` with DVC: dvc add (DATA.dvc and DATA.md5sums written beside it) and push to
    `remote`. Runs after validation, so only data that passed is published. Returns the content hash that
    identifies this dataset downstream (the training run's data_version)."""
    from collections import namedtuple

    from dataset import versioning

    version = versioning.version_data(data, remote=remote or None)
    outputs = namedtuple("DataVersionOutputs", ["md5", "nfiles", "size", "dvc_file"])
    return outputs(str(version.md5), int(version.nfiles), int(version.size), str(version.dvc_file))
