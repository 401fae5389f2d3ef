"""Data preparation: the synthetic benchmark generator, triple validation (Great Expectations),
dataset versions (DVC) and the `data` commands. Imports model/ (manifests, media decoding, errors,
and for `attributes` the evaluation), never the packages above it."""
