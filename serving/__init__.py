"""Serving: ONNX export, the Triton model repository, the KServe transformer and search model,
InferenceService manifests and the local launcher. Nothing here yet."""
