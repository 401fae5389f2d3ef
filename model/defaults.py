"""The default training budget: what `omniretriever train`, the ablation, the pipeline and the
benchmarks use unless told otherwise. About 7 minutes of the full objective on 2 CPU cores (tiny config); see
docs/TRAINING.md for how it was chosen. Kept free of heavy imports: the pipeline definition reads it."""

TRAIN_STEPS = 600
BATCH_SIZE = 64
TOKEN_KEEP = 0.5  # fraction of video and audio tokens each training view keeps (random per clip)
UNMASKED_STEPS = 0.1  # fraction of the last steps that keep every token
