"""The Kubeflow pipeline DAG, its local run (kfp.local), compilation to IR YAML and the recurring
retraining schedule. Nothing here yet."""
