"""Data steps: version the dataset with DVC, then validate its triples with Great Expectations.

Both run in the CPU image. Data travels as a path (a string parameter): the local dataset directory,
or in a cluster a directory on the workspace volume that `version_data(pull=True)` fills from the DVC
remote. A failed validation is an outcome, not an error: `validate_data` returns passed=False and the
pipeline skips training.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Output

from components.images import CPU_BASE_IMAGE, CPU_TARGET_IMAGE


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def version_data(data: str, remote: str = "", pull: bool = False) -> NamedTuple(
        "DataVersionOutputs", [("md5", str), ("nfiles", int), ("size", int), ("dvc_file", str)]):
    """Version `data` with DVC (add + push to `remote`), or with pull=True fetch the version that its
    .dvc file names from `remote`. Returns the content hash that identifies this dataset downstream."""
    from collections import namedtuple

    from model import versioning

    remote_or_default = remote or None
    version = (versioning.pull_data(data, remote=remote_or_default) if pull
               else versioning.version_data(data, remote=remote_or_default))
    outputs = namedtuple("DataVersionOutputs", ["md5", "nfiles", "size", "dvc_file"])
    return outputs(str(version.md5), int(version.nfiles), int(version.size), str(version.dvc_file))


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def validate_data(data: str, report: Output[HTML], max_rejected: float = 0.0) -> bool:
    """Validate every triple of `data` with Great Expectations and return whether the data passed
    (no more than `max_rejected` of the rows fail). The HTML `report` shows the verdict, the failed
    expectations and the rows they name; its metadata carries the counts, `failures` (the failed checks
    in one line) and `details` (the directory with summary.json, validated.jsonl, rejected.jsonl and
    the GX data docs). The verdict is the single return value because the pipeline branches on it."""
    from pathlib import Path

    from components.reports import failures_line, validation_html
    from model.validation import validate

    details = Path(report.path).parent / "validation"
    result = validate(data, details, max_rejected=max_rejected)
    Path(report.path).write_text(validation_html(result, data))
    report.metadata.update(passed=bool(result.passed), total=int(result.total), validated=int(result.validated),
                           rejected=int(result.rejected), rejected_fraction=float(result.rejected_fraction),
                           failures=failures_line(result), details=str(details))
    return bool(result.passed)
