"""Container images of the pipeline's components, pinned in one place.

Two kinds: a CPU image for the glue steps (data, evaluation, registry, export, deploy, and the KServe
transformer) and a CUDA image for training. Base images are pinned to exact releases; the Dockerfiles
beside the components (components/Dockerfile, components/gpu/Dockerfile) start FROM these same tags,
which a test checks. `kfp component build` tags what it builds with the target images below.
"""

from __future__ import annotations

# Python 3.11 like the project (requires-python <3.12); Debian bookworm, slim.
CPU_BASE_IMAGE = "python:3.11.11-slim-bookworm"
# CUDA 12.8 runtime + cuDNN on Ubuntu 22.04; Python 3.11 comes from the deadsnakes archive.
CUDA_BASE_IMAGE = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04"

# Where `kfp component build` pushes the images (the registry is the deployment's choice: edit here).
IMAGE_REGISTRY = "ghcr.io/omniretriever"
IMAGE_TAG = "0.1.0"
CPU_TARGET_IMAGE = f"{IMAGE_REGISTRY}/omniretriever-cpu:{IMAGE_TAG}"
CUDA_TARGET_IMAGE = f"{IMAGE_REGISTRY}/omniretriever-cuda:{IMAGE_TAG}"
# The Triton predictor of a pretrained backbone (serving/Dockerfile.triton: tritonserver with torch and the
# project); the tiny encoder's ONNX graph is served by the kserve-tritonserver runtime's own image.
TRITON_TARGET_IMAGE = f"{IMAGE_REGISTRY}/omniretriever-triton:{IMAGE_TAG}"
