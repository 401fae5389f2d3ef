"""Base-checkpoint steps, in the CPU image: one of the two runs before training, by the `checkpoint`
pipeline parameter.

    [checkpoint given] fetch-checkpoint ─┐
    [none]             no-checkpoint ────┴─► train-model (checkpoint, checkpoint_sha256)

fetch_checkpoint hands on a directory on the workspace volume as it is, and downloads an s3:// or hf://
checkpoint once into the cache on the volume, reusing it on later runs (model.omni.fetch). no_checkpoint
is the tiny backbone's branch, trained from scratch: both return the same outputs, so the train step
takes whichever ran.
"""

from typing import NamedTuple

from kfp import dsl

from components.images import CPU_BASE_IMAGE, CPU_TARGET_IMAGE


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def fetch_checkpoint(checkpoint: str, cache: str, endpoint_url: str = "") -> NamedTuple(
        "CheckpointOutputs", [("path", str), ("sha256", str)]):
    """The base checkpoint `checkpoint` names as a local directory (`path`) and its weights digest
    (`sha256`, model.omni.checkpoint.weights_digest). A directory is validated and handed on unchanged;
    s3://bucket/prefix (credentials from the environment; `endpoint_url` for a store other than AWS) and
    hf://org/name[@revision] are downloaded into `cache`/<sha256>/ once, and a later run naming the same
    URI reuses that copy without a download."""
    from collections import namedtuple

    from model.omni.fetch import fetch_checkpoint as fetch

    fetched = fetch(checkpoint, cache, endpoint_url=endpoint_url or None)
    for note in fetched.notes:
        print(f"note: {note}")
    if fetched.downloaded:
        print(f"fetched {checkpoint}: {fetched.files} file(s), {fetched.size / 1e6:.1f} MB into {fetched.path}")
    else:
        print(f"{checkpoint}: using {fetched.path} (nothing downloaded)")
    print(f"weights sha256 {fetched.sha256}")
    outputs = namedtuple("CheckpointOutputs", ["path", "sha256"])
    return outputs(str(fetched.path), fetched.sha256)


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def no_checkpoint() -> NamedTuple("CheckpointOutputs", [("path", str), ("sha256", str)]):
    """No base checkpoint (the tiny backbone trains from scratch): empty `path` and `sha256`."""
    from collections import namedtuple

    print("no base checkpoint: the config's backbone trains from scratch")
    return namedtuple("CheckpointOutputs", ["path", "sha256"])("", "")
