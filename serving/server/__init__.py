"""kserve's model server as the transformer runs it (model_server.py, whose docstring lists what is changed and
why), in rooms: status.py (errors and their statuses), workers.py (bounded pools), readiness.py (Triton-aware
readiness), http_api.py and grpc_api.py (the two protocols). Only the transformer's process imports these."""
