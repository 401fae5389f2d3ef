"""PyTorch core of OmniRetriever: modalities, manifests, media decoding, the feature cache, the
synthetic benchmark, the unified encoder, the losses, training and evaluation.

Imports no kfp, mlflow or kserve: the components, pipelines and serving packages wrap this one.
"""
