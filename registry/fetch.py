"""A registered model by name and alias or version, downloaded to a directory: what a step that serves or
indexes with the champion reads.

    fetched = fetch_registered("models:/omniretriever@champion", dst)     # or models:/omniretriever/3
    load_model(fetched.model_dir)

The download is checked against the weights sha256 recorded when the model was logged, so a gallery is
never embedded by other weights than the registered ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from registry.aliases import RegistryError
from registry.logged_model import WEIGHTS_TAG, download_model_dir
from registry.store import client

_URI = re.compile(r"models:/(?P<name>[A-Za-z0-9_.-]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))")


@dataclass(frozen=True)
class FetchedModel:
    model_dir: Path
    name: str
    version: str
    weights_sha256: str


def parse_registered(uri: str) -> tuple[str, str]:
    """models:/NAME@ALIAS or models:/NAME/VERSION -> (NAME, ALIAS or VERSION); RegistryError otherwise."""
    m = _URI.fullmatch(uri.strip())
    if m is None:
        raise RegistryError(f"{uri!r} is not a registered model URI: give models:/NAME@ALIAS (e.g. "
                            "models:/omniretriever@champion) or models:/NAME/VERSION")
    return m["name"], m["alias"] or m["version"]


def fetch_registered(uri: str, dst: str | Path, *, tracking_uri: str | None = None) -> FetchedModel:
    """Download the version `uri` names into `dst` (created) and check its weights' sha256."""
    from model.store import weights_digest
    from registry.registry import show_version

    name, which = parse_registered(uri)
    version = show_version(name, which, tracking_uri=tracking_uri)
    Path(dst).mkdir(parents=True, exist_ok=True)
    model_dir = download_model_dir(version.model_uri or version.uri, dst)
    actual = weights_digest(model_dir)
    recorded = client(tracking_uri).get_run(version.run_id).data.tags.get(WEIGHTS_TAG)  # as logged
    if recorded and actual != recorded:
        raise RegistryError(f"{uri} (version {version.version}): the downloaded weights' sha256 {actual[:12]}… is not "
                            f"the registered {recorded[:12]}…: the artifact is corrupted")
    return FetchedModel(model_dir, name, version.version, actual)
