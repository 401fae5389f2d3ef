"""Kubeflow components, one per pipeline step (version data, validate, train, evaluate, register,
gate, export and deploy): thin typed wrappers over model/ and serving/. Nothing here yet."""
