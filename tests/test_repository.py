"""The Triton model repository: layout, both config.pbtxt files against serving.tensors, one shared graph."""

import hashlib
import json

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from model.inference import INPUTS
from model.store import load_model
from serving.repository import PRODUCTION, LOCAL, build_repository, config_path, read_repository
from serving.limits import ServingLimits
from serving.tensors import (ENCODER_MODEL, MAX_BATCH_SIZE, TEXT_ENCODER_MODEL, embedding_outputs, encoder_inputs,
                             encoder_outputs, search_outputs, text_encoder_inputs)

DEVICE = {PRODUCTION: "KIND_GPU", LOCAL: "KIND_CPU"}


def parse_config(path) -> model_config_pb2.ModelConfig:
    """config.pbtxt parsed by Triton's own protobuf schema: a typo or an unknown field fails here."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def as_specs(tensors) -> list[tuple[str, str, list[int]]]:
    return [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in tensors]


def test_layout(tiny_repo):
    model = tiny_repo / PRODUCTION / ENCODER_MODEL
    for path in (model / "1" / "model.onnx", model / "config.pbtxt", model / "encoder.json", model / "tokenizer.json",
                 model / "model.json", tiny_repo / LOCAL / ENCODER_MODEL / "config.pbtxt",
                 tiny_repo / LOCAL / ENCODER_MODEL / "1" / "model.py", tiny_repo / "repository.json"):
        assert path.is_file(), path
    assert not (tiny_repo / LOCAL / ENCODER_MODEL / "1" / "model.onnx").exists()  # no second copy of the graph
    text = tiny_repo / PRODUCTION / TEXT_ENCODER_MODEL
    for path in (text / "1" / "model.onnx", text / "config.pbtxt", tiny_repo / LOCAL / TEXT_ENCODER_MODEL / "config.pbtxt",
                 tiny_repo / LOCAL / TEXT_ENCODER_MODEL / "1" / "model.py"):
        assert path.is_file(), path
    assert not (tiny_repo / LOCAL / TEXT_ENCODER_MODEL / "1" / "model.onnx").exists()


@pytest.mark.parametrize("kind", [PRODUCTION, LOCAL])
def test_text_model_config_takes_the_captions_tensors_only(tiny_repo, tiny_run, kind):
    cfg = load_model(tiny_run).config
    config = parse_config(config_path(tiny_repo, kind, TEXT_ENCODER_MODEL))
    assert config.name == TEXT_ENCODER_MODEL and config.max_batch_size == MAX_BATCH_SIZE
    assert as_specs(config.input) == [(s.name, s.triton_type, list(s.dims)) for s in text_encoder_inputs(cfg)]
    assert [i.name for i in config.input] == ["text_ids", "text_mask"]
    assert as_specs(config.output) == [(s.name, s.triton_type, list(s.dims)) for s in encoder_outputs(cfg)]
    assert config.HasField("dynamic_batching")
    assert [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == [DEVICE[kind]]
    assert (config.platform == "onnxruntime_onnx") == (kind == PRODUCTION)


@pytest.mark.parametrize("kind", [PRODUCTION, LOCAL])
def test_config_tensors_match_the_one_definition(tiny_repo, tiny_run, kind):
    cfg = load_model(tiny_run).config
    config = parse_config(config_path(tiny_repo, kind))
    assert config.name == ENCODER_MODEL and config.max_batch_size == MAX_BATCH_SIZE
    assert as_specs(config.input) == [(s.name, s.triton_type, list(s.dims)) for s in encoder_inputs(cfg)]
    assert as_specs(config.output) == [(s.name, s.triton_type, list(s.dims)) for s in encoder_outputs(cfg)]
    assert [i.name for i in config.input] == list(INPUTS)
    # the transformer passes Triton's outputs on as its own: the embedding model's, and the search model's after
    # IDS and SCORES, are the config's; by default a request may carry as many rows as one Triton batch
    served = [(s.name, s.triton_type, list(s.dims)) for s in embedding_outputs(cfg)]
    assert as_specs(config.output) == served
    assert [(s.name, s.triton_type, list(s.dims)) for s in search_outputs(cfg, 7)] == \
        [("IDS", "TYPE_STRING", [7]), ("SCORES", "TYPE_FP32", [7]), ("START", "TYPE_FP32", [7]), ("END", "TYPE_FP32", [7]),
         ("MODALITIES", "TYPE_STRING", [7]), ("MEDIA_URIS", "TYPE_STRING", [7]),
         ("CAPTIONS", "TYPE_STRING", [7]), *served]
    assert ServingLimits().max_rows == config.max_batch_size
    assert config.HasField("dynamic_batching")
    assert [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == [DEVICE[kind]]


def test_production_runs_onnxruntime_and_local_the_python_backend(tiny_repo):
    production, local = (parse_config(config_path(tiny_repo, k)) for k in (PRODUCTION, LOCAL))
    assert production.platform == "onnxruntime_onnx" and not production.backend
    assert local.backend == "python" and not local.platform


@pytest.mark.parametrize("model", [ENCODER_MODEL, TEXT_ENCODER_MODEL])
def test_local_model_reads_production_graph_by_digest(tiny_repo, model):
    params = {k: v.string_value for k, v in parse_config(config_path(tiny_repo, LOCAL, model)).parameters.items()}
    graph = (tiny_repo / LOCAL / model / params["onnx_model"]).resolve()
    assert graph == (tiny_repo / PRODUCTION / model / "1" / "model.onnx").resolve()
    assert hashlib.sha256(graph.read_bytes()).hexdigest() == params["onnx_sha256"]
    assert params["allow_spinning"] == "0"  # ONNX Runtime's threads sleep between runs on the shared local CPU


def test_graph_tensors_match_the_one_definition(tiny_repo, tiny_run):
    graph = onnx.load(str(tiny_repo / PRODUCTION / ENCODER_MODEL / "1" / "model.onnx")).graph
    cfg = load_model(tiny_run).config
    names = {onnx.TensorProto.INT64: "INT64", onnx.TensorProto.BOOL: "BOOL", onnx.TensorProto.UINT8: "UINT8",
             onnx.TensorProto.FLOAT: "FP32"}

    def spec(value):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        return value.name, names[value.type.tensor_type.elem_type], dims

    assert [spec(v) for v in graph.input] == [(s.name, s.datatype, [-1, *s.dims]) for s in encoder_inputs(cfg)]
    assert [spec(v) for v in graph.output] == [(s.name, s.datatype, [-1, *s.dims]) for s in encoder_outputs(cfg)]


def test_repository_json_records_what_was_built(tiny_repo, tiny_run):
    info = read_repository(tiny_repo)
    assert info["max_abs_diff"] < 1e-4 and info["embed_dim"] == load_model(tiny_run).config.embed_dim
    served = json.loads((tiny_repo / PRODUCTION / ENCODER_MODEL / "model.json").read_text())
    assert served["weights_sha256"] == info["weights_sha256"] and len(info["onnx_sha256"]) == 64
    text = served["text_model"]
    assert text["triton_model"] == TEXT_ENCODER_MODEL and text["max_abs_diff"] < 1e-4 and text["rows_checked"] > 0
    assert text["onnx_sha256"] != info["onnx_sha256"]


def test_a_directory_that_is_not_a_repository_is_never_replaced(tiny_run, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a model repository"):
        build_repository(tiny_run, tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_a_bad_model_leaves_the_existing_repository_alone(tiny_repo, tmp_path):
    before = (tiny_repo / "repository.json").read_text()
    with pytest.raises(FileNotFoundError, match="not a saved model"):
        build_repository(tmp_path / "no-model", tiny_repo)
    assert (tiny_repo / "repository.json").read_text() == before
    assert not [p for p in tiny_repo.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_read_repository_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="omniretriever export"):
        read_repository(tmp_path)
