"""Lineage: which data and code a run came from, recorded as tags of its MLflow run.

    data_version     the DVC version ("<md5>.dir") of the data as it is, given by the pipeline's
                     version-data step or computed from the files ("unversioned" without DATA.dvc)
    git_commit       HEAD of the code's checkout, "-dirty" with local changes
    pipeline_run_id  the orchestrator's run ("none" outside a pipeline)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def data_version(data: str | Path) -> str:
    """The DVC version ("<md5>.dir") of the data directory as it is now, when a DATA.dvc beside it
    (DATA.parent / "DATA.dvc") versions it; else "unversioned". Computed from the files, never read
    from DATA.dvc: data changed or regenerated with other bytes since it was versioned is recorded
    under its own version. A malformed .dvc file is a VersioningError naming it."""
    from dataset.versioning import dvc_file_for, file_listing, listing_version, read_version

    if read_version(dvc_file_for(data)) is None:
        return "unversioned"
    return listing_version(file_listing(data))


def git_commit(where: Path | None = None) -> str:
    """HEAD of the git checkout holding the code (or `where`), with "-dirty" if it has local changes; "unknown" outside git."""
    cwd = where or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty else "")


def lineage_tags(data: str | Path, pipeline_run_id: str | None, version: str | None = None) -> dict[str, str]:
    """data_version (`version` when the caller knows it, e.g. the pipeline's version-data step, else
    data_version(data)), git_commit, pipeline_run_id ("none" outside a pipeline), data_path; plus
    recorded_data_version when DATA.dvc records another version than the data has."""
    from dataset.versioning import dvc_file_for, read_version

    pipeline = pipeline_run_id or os.environ.get("OMNIRETRIEVER_PIPELINE_RUN_ID") or "none"
    version = version or data_version(data)
    tags = {"data_version": version, "git_commit": git_commit(), "pipeline_run_id": pipeline,
            "data_path": str(Path(data).resolve())}
    recorded = read_version(dvc_file_for(data))
    if recorded is not None and recorded != version:
        tags["recorded_data_version"] = recorded
    return tags
