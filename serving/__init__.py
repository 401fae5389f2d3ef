"""Serving: the Triton model repository (repository.py, tensors.py, triton_model.py), the KServe transformer
and search model (transformer.py, requests.py, index.py) on kserve's model server as patched in
server/, the local launcher (launcher.py), the client (client.py), InferenceService manifests and
deployment (manifests.py, deploy.py) and the CLI (cli.py).

Only transformer.py and server/ import kserve, and only the transformer's own process imports them
(kserve and tritonclient.grpc cannot share a process)."""
