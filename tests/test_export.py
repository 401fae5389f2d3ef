"""ONNX export: one graph for every subset of modalities, dynamic batch, parity with PyTorch under 1e-4."""

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from model.config import load_config
from model.encoder import OmniEncoder
from model.errors import ExportError
from model.export import PARITY_TOLERANCE, TEXT_INPUTS, check_parity, export_onnx, export_text_onnx, random_inputs
from model.inference import Embedder
from model.manifest import read_split, resolve_media
from model.store import load_model, save_model
from model.text import TextTokenizer
from omniretriever.cli import app
from serving.tensors import encoder_inputs, encoder_outputs

# the packaged tiny config is exported from tiny_run (tiny_repo); these cover the encoder's other branches
VARIANTS = {
    "mean-pool-text-skips-head": {"pooling": "mean", "text_projection": False, "embed_dim": 128},
    "attn-pool-linear-stems": {"pooling": "attn", "stem_dim": 0},
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def random_model(request, tmp_path_factory):
    """A saved model with random weights for each architecture variant (branches the export must trace)."""
    cfg = dataclasses.replace(load_config("tiny"), **VARIANTS[request.param])
    tokenizer = TextTokenizer.train(["a red square moves left", "a dog barks twice"], cfg.vocab_size, cfg.max_text_len)
    return save_model(tmp_path_factory.mktemp(request.param) / "model", OmniEncoder(cfg).eval(), tokenizer)


def test_parity_on_random_subsets_per_row(random_model, tmp_path):
    result = export_onnx(random_model, tmp_path)  # a directory: the graph goes to model.onnx inside it
    assert result.onnx == tmp_path / "model.onnx" and result.max_abs_diff < PARITY_TOLERANCE
    print(f"max |onnxruntime - pytorch| = {result.max_abs_diff:.2e} over {result.rows_checked} rows")
    # an independent draw at batch sizes the export did not check
    diff, rows = check_parity(result.onnx, load_model(random_model), batches=(3, 33), seed=123)
    assert rows == 36 and diff < PARITY_TOLERANCE


def test_text_graph_matches_the_joint_forward_on_captions(random_model, tmp_path):
    """The text graph (captions' tokens alone) against the PyTorch joint forward with video and audio masked, in
    every variant: mean pooling with the text rows skipping the head too."""
    result = export_text_onnx(random_model, tmp_path / "text.onnx")
    assert result.max_abs_diff < PARITY_TOLERANCE
    diff, rows = check_parity(result.onnx, load_model(random_model), batches=(2, 33), seed=9, text_only=True)
    assert rows == 35 and diff < PARITY_TOLERANCE
    session = ort.InferenceSession(str(result.onnx), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(TEXT_INPUTS)


def test_text_graph_that_fails_parity_leaves_nothing(tiny_run, tmp_path):
    with pytest.raises(ExportError, match="text graph"):
        export_text_onnx(tiny_run, tmp_path / "t.onnx", tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


def test_every_subset_is_present_in_the_parity_batches(random_model):
    present = random_inputs(load_model(random_model), 7, seed=0)["present"]
    assert len({tuple(p) for p in present}) == 7 and present.any(axis=1).all()


@pytest.fixture(scope="module")
def tiny_onnx(tiny_repo):
    return tiny_repo / "production" / "omniretriever-encoder" / "1" / "model.onnx"


def test_the_exported_model_matches_pytorch_on_random_subsets(tiny_run, tiny_onnx):
    diff, rows = check_parity(tiny_onnx, load_model(tiny_run), batches=(1, 7, 64), seed=7)
    assert rows == 72 and diff < PARITY_TOLERANCE


def test_graph_has_the_served_names_dtypes_and_a_dynamic_batch(tiny_run, tiny_onnx):
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    cfg = load_model(tiny_run).config
    ort_types = {"INT64": "tensor(int64)", "BOOL": "tensor(bool)", "UINT8": "tensor(uint8)", "FP32": "tensor(float)"}
    got = [(i.name, i.type, i.shape) for i in session.get_inputs()]
    want = [(s.name, ort_types[s.datatype], ["batch", *s.dims]) for s in encoder_inputs(cfg)]
    assert got == want
    out = encoder_outputs(cfg)[0]
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [(out.name, "tensor(float)", ["batch", *out.dims])]


def test_graph_embeds_real_requests_like_the_pytorch_embedder(tiny_run, tiny_data, tiny_onnx):
    """Real captions and clips with a different subset per row: ONNX Runtime == Embedder."""
    embedder = Embedder(tiny_run)
    recs = read_split(tiny_data, "test")[:7]
    fields = [("text",), ("video",), ("audio",), ("text", "video"), ("video", "audio"), ("text", "audio"),
              ("text", "video", "audio")]
    rows = [{f: (r.text if f == "text" else resolve_media(tiny_data, getattr(r, f)).read_bytes()) for f in fs}
            for r, fs in zip(recs, fields)]
    arrays = embedder.preprocess(rows)
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    got = session.run(["EMBEDDING"], arrays)[0]
    np.testing.assert_allclose(got, embedder.embed(rows), atol=PARITY_TOLERANCE)


def test_an_export_that_fails_parity_leaves_nothing(tiny_run, tmp_path):
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(tiny_run, tmp_path / "m.onnx", tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


def test_a_directory_that_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing model.safetensors"):
        export_onnx(tmp_path, tmp_path / "m.onnx")


def test_export_command_builds_the_repository_and_reports_parity(tiny_run, tmp_path):
    res = CliRunner().invoke(app, ["export", "--model", str(tiny_run), "--out", str(tmp_path / "repo")])
    assert res.exit_code == 0, res.output
    assert "max |onnxruntime - pytorch|" in res.output
    assert (tmp_path / "repo" / "production" / "omniretriever-encoder" / "1" / "model.onnx").is_file()
    bad = CliRunner().invoke(app, ["export", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and "error:" in bad.output and "not a saved model" in bad.output
