"""Serving: the Triton model repository (repository.py, tensors.py; the python-backend models triton_model.py and
triton_torch_model.py over triton_batch.py), the KServe transformer
and search model (transformer.py, requests.py, index.py) on kserve's model server as patched in
server/, the local launcher (launcher.py), the client (client.py), InferenceService manifests and
deployment (manifests.py, deploy.py) and the CLI (cli.py).

Only transformer.py and server/ import kserve, and only the transformer's own process imports them
(kserve and tritonclient.grpc cannot share a process)."""
