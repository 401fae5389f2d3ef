"""MLflow tracking, the logged pyfunc model, the model registry and the promotion gate."""
