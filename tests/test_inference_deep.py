"""PYTORCH, ONNX and HUGGINGFACE models through the predictor API and RunModel.

The models are built here or by the repo's own scripts (no downloads):
pipelines/pytorch_onnx/build_models.py trains a small PyTorch network and
writes it as a state dict and as an ONNX graph; pipelines/caption_ranking/
build_tiny_models.py writes tiny random-weight BLIP and CLIP directories.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import sys

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")

from onnx import TensorProto, helper  # noqa: E402
from PIL import Image  # noqa: E402
from test_inference import run_model  # noqa: E402

from beam_dsl.diagnostics import DiagnosticError  # noqa: E402
from beam_dsl.ir import Call  # noqa: E402
from beam_dsl.ir.model import Batch, ModelConfig  # noqa: E402
from beam_dsl.runner import run_pipeline  # noqa: E402
from beam_dsl.transforms.inference.base import gpu_visible  # noqa: E402
from beam_dsl.transforms.inference.predictors import build_predictor  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAUD = os.path.join(REPO, "pipelines", "pytorch_onnx")
CAPTIONS = os.path.join(REPO, "pipelines", "caption_ranking")
DEVICES = ["cpu", pytest.param("gpu", marks=pytest.mark.skipif(
    not gpu_visible(), reason="no GPU visible"))]


def _load_script(folder: str, name: str):
    sys.path.insert(0, folder)
    try:
        return __import__(name)
    finally:
        sys.path.remove(folder)


# ---------------------------------------------------------------- PyTorch and ONNX


@pytest.fixture(scope="module")
def fraud_example(tmp_path_factory):
    """The pytorch_onnx example in a scratch directory, with its data and models built."""
    root = tmp_path_factory.mktemp("pytorch_onnx")
    for name in ("fraud.bdsl", "pipeline.yaml", "nets.py"):
        shutil.copy(os.path.join(FRAUD, name), root)
    paths = _load_script(FRAUD, "build_models").build(str(root), rows=600)
    return root, paths


def _json_dir(pattern_dir) -> list[dict]:
    rows = []
    for name in sorted(os.listdir(pattern_dir.parent)):
        if name.startswith(pattern_dir.name):
            with open(pattern_dir.parent / name) as f:
                rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def test_the_pytorch_and_onnx_forms_of_one_network_score_alike(fraud_example):
    root, paths = fraud_example
    summary = run_pipeline(str(root / "pipeline.yaml"), progress=None)
    assert summary.rows_out == {
        "fraud_torch.main": 58, "fraud_torch.errors": 2,
        "fraud_onnx.main": 58, "fraud_onnx.errors": 2,
    }
    by_torch = {r["tx_id"]: r for r in _json_dir(root / "out" / "torch")}
    by_onnx = {r["tx_id"]: r for r in _json_dir(root / "out" / "onnx")}
    assert by_torch.keys() == by_onnx.keys() and len(by_torch) == 58
    for tx, row in by_torch.items():
        assert row["fraud_score"] == pytest.approx(by_onnx[tx]["fraud_score"], abs=1e-5)
    assert next(iter(by_torch.values()))["model_id"].startswith("models/fraud_net.pt@")
    # the scores are the network's own: recompute a few with PyTorch directly
    net = _load_script(FRAUD, "nets").FraudNet(features=4, hidden=16)
    net.load_state_dict(torch.load(paths["torch"]))
    frame = pd.DataFrame(by_torch.values()).head(10)
    features = torch.tensor(frame[["amount", "hour", "tx_last_24h", "km_from_home"]].to_numpy(),
                            dtype=torch.float32)
    expected = net(features).detach().numpy()[:, 0]
    assert frame["fraud_score"].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    errors = _json_dir(root / "out" / "errors")
    assert len(errors) == 4 and all("missing (NaN)" in e["reason"] for e in errors)


class _Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize("device", DEVICES)
def test_torchscript_without_class_answers_classes_with_confidence(tmp_path, device):
    torch.manual_seed(0)
    net = _Classifier().eval()
    path = str(tmp_path / "digits.pt")
    torch.jit.script(net).save(path)
    config = ModelConfig("digits", "pytorch", path=path, input=("pixels",), output=("digit",),
                         device=device)
    vectors = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    frame = pd.DataFrame({"pixels": [v.tolist() for v in vectors]})
    result = build_predictor(config).predict(frame)
    logits = net(torch.from_numpy(vectors)).detach()
    assert result["digit"].tolist() == logits.argmax(1).tolist()
    assert result["confidence"].tolist() == pytest.approx(
        torch.softmax(logits, 1).max(1).values.tolist(), abs=1e-5)
    assert set(result["proba"].iloc[0]) == {0, 1, 2, 3}


def test_classes_name_the_class_indices_a_network_answers(tmp_path):
    torch.manual_seed(1)
    net = _Classifier().eval()
    path = str(tmp_path / "digits.pt")
    torch.jit.script(net).save(path)
    labels = ("zero", "one", "two", "three")
    config = ModelConfig("digits", "pytorch", path=path, input=("pixels",), output=("digit",),
                         classes=labels)
    vectors = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)
    frame = pd.DataFrame({"pixels": [v.tolist() for v in vectors]})
    result = build_predictor(config).predict(frame)
    proba = torch.softmax(net(torch.from_numpy(vectors)).detach(), 1)
    assert result["digit"].tolist() == [labels[i] for i in proba.argmax(1).tolist()]
    assert result["confidence"].tolist() == pytest.approx(proba.max(1).values.tolist(),
                                                          abs=1e-5)
    first = dict(zip(labels, proba[0].tolist(), strict=True))
    assert result["proba"].iloc[0] == pytest.approx(first, abs=1e-5)
    # CLASSES that do not fit the network's four scores: every row to errors, no crash
    rows = [beam.Row(id=i, pixels=v.tolist()) for i, v in enumerate(vectors)]
    wrong = dataclasses.replace(config, classes=labels[:3], batch=Batch(4, 4))
    main, errors = run_model(tmp_path, rows, wrong)
    assert main == [] and len(errors) == len(rows)
    assert all("CLASSES names 3 labels" in e["reason"] for e in errors)


def test_classes_name_an_onnx_graphs_scores_or_class_index(tmp_path):
    weights = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.5]], dtype=np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["scores"])]
    graphs = {
        "scores": nodes,
        "index": nodes + [helper.make_node("ArgMax", ["scores"], ["index"], axis=1,
                                           keepdims=0)],
    }
    x = np.random.default_rng(2).normal(size=(7, 2)).astype(np.float32)
    labels = ("low", "mid", "high")
    expected = [labels[i] for i in (x @ weights).argmax(1).tolist()]
    for out, nodes in graphs.items():
        graph = helper.make_graph(
            nodes, out,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
            [helper.make_tensor_value_info(
                out, TensorProto.FLOAT if out == "scores" else TensorProto.INT64,
                ["batch", 3] if out == "scores" else ["batch"])],
            [onnx.numpy_helper.from_array(weights, "w")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path = str(tmp_path / f"{out}.onnx")
        onnx.save(model, path)
        config = ModelConfig("level", "onnx", path=path, input=("x",), classes=labels)
        result = build_predictor(config).predict(pd.DataFrame({"x": x.tolist()}))
        assert result["level"].tolist() == expected
        assert result["error"].isna().all()
        scored = out == "scores"  # class scores carry confidence; a bare index does not
        assert result["confidence"].notna().all() == scored
        if scored:
            assert set(result["proba"].iloc[0]) == set(labels)


def test_a_state_dict_needs_its_class(tmp_path):
    path = str(tmp_path / "net.pt")
    torch.save(_Classifier().state_dict(), path)
    with pytest.raises(DiagnosticError) as no_class:
        build_predictor(ModelConfig("net", "pytorch", path=path, input=("x",)))
    assert no_class.value.diagnostics[0].code == "E401"
    assert "TorchScript" in str(no_class.value)


def test_onnx_graph_inputs_and_outputs_match_columns_by_name(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["total"]), helper.make_node("Mul", ["a", "b"],
                                                                          ["product"])],
        "arithmetic",
        [helper.make_tensor_value_info(n, TensorProto.DOUBLE, ["batch"]) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, TensorProto.DOUBLE, ["batch"])
         for n in ("total", "product")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path / "arithmetic.onnx")
    onnx.save(model, path)
    config = ModelConfig("arith", "onnx", path=path, input=("a", "b"),
                         output=("product", "total"))
    rows = [beam.Row(a=float(i), b=2.5, id=i) for i in range(5)]
    main, errors = run_model(tmp_path, rows, config)
    assert errors == []
    assert sorted((r["id"], r["total"], r["product"]) for r in main) == [
        (i, i + 2.5, i * 2.5) for i in range(5)]


# ---------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return _load_script(CAPTIONS, "build_tiny_models").build(str(root))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two image files, and the second one's bytes as a PNG."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        path = str(folder / f"image_{i}.jpg")
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    encoded = io.BytesIO()
    Image.open(paths[1]).save(encoded, format="PNG")
    return paths, encoded.getvalue()


BLIP_CALL = Call("generate", kwargs={"max_length": 12, "min_length": 3,
                                     "num_return_sequences": 3, "do_sample": True})


@pytest.mark.parametrize("device", DEVICES)
def test_blip_writes_captions_for_paths_and_bytes_and_rejects_a_broken_image(
    tiny_models, images, device
):
    paths, encoded = images
    config = ModelConfig("blip", "huggingface", path=tiny_models["blip"], call=BLIP_CALL,
                         input=("image",), output=("captions",), device=device)
    frame = pd.DataFrame({"image": [paths[0], encoded, b"\x89PNG broken", paths[1]]})
    result = build_predictor(config).predict(frame)
    assert result["error"].tolist()[:2] == [None, None] and result["error"].iloc[3] is None
    broken = "cannot decode image: ValueError: 11 bytes that are not an image"
    assert result["error"].iloc[2] == broken
    for row in (0, 1, 3):
        captions = result["captions"].iloc[row]
        assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    assert result["model_id"].iloc[0].startswith(tiny_models["blip"] + "@")


@pytest.mark.parametrize("device", DEVICES)
def test_clip_scores_each_caption_of_a_row_against_its_image(tiny_models, images, device):
    paths, encoded = images
    config = ModelConfig("clip", "huggingface", path=tiny_models["clip"],
                         input=("image", "captions"), output=("caption_scores",), device=device)
    captions = [["a red car", "two dogs on the grass", "a boat"], ["a cat"]]
    frame = pd.DataFrame({"image": [paths[0], encoded], "captions": captions})
    scores = build_predictor(config).predict(frame)["caption_scores"].tolist()
    assert [len(s) for s in scores] == [3, 1]
    assert [sum(s) for s in scores] == pytest.approx([1.0, 1.0])
    # the scores are CLIP's: image-text logits, softmax over the row's captions
    from transformers import CLIPModel, CLIPProcessor

    model, processor = (cls.from_pretrained(tiny_models["clip"]) for cls in (CLIPModel,
                                                                           CLIPProcessor))
    inputs = processor(text=captions[0], images=[Image.open(paths[0]).convert("RGB")],
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**inputs).logits_per_image.softmax(-1)[0].tolist()
    assert scores[0] == pytest.approx(expected, abs=1e-5)


def test_run_model_serves_blip_captions_as_lists(tmp_path, tiny_models, images):
    paths, _ = images
    config = ModelConfig("blip", "huggingface", path=tiny_models["blip"], call=BLIP_CALL,
                         input=("image",), output=("captions",), batch=Batch(1, 2))
    rows = [beam.Row(image_id=f"i{i}", image=path) for i, path in enumerate(paths * 2)]
    rows.append(beam.Row(image_id="gone", image=str(tmp_path / "missing.jpg")))
    main, errors = run_model(tmp_path, rows, config)
    assert sorted(r["image_id"] for r in main) == ["i0", "i1", "i2", "i3"]
    assert all(len(r["captions"]) == 3 for r in main)
    assert len(errors) == 1 and "No such file" in errors[0]["reason"]


def test_classes_name_a_huggingface_classifiers_logits(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["a", "the", "good", "bad", "fine", "awful", "movie"]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(specials + words)})
    torch.manual_seed(3)
    net = BertForSequenceClassification(BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=32, num_labels=3)).eval()
    path = str(tmp_path / "sentiment")
    net.save_pretrained(path)
    tokenizer.save_pretrained(path)
    texts = ["a good movie", "the awful movie", "fine", "bad bad bad", "good"]
    labels = ("negative", "neutral", "positive")
    config = ModelConfig("sentiment", "huggingface", path=path, input=("text",), classes=labels)
    result = build_predictor(config).predict(pd.DataFrame({"text": texts}))
    inputs = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=32)
    with torch.no_grad():
        proba = net(**inputs).logits.softmax(-1)
    best = proba.argmax(1).tolist()
    assert result["sentiment"].tolist() == [labels[i] for i in best]
    assert result["confidence"].tolist() == pytest.approx(proba.max(1).values.tolist(),
                                                          abs=1e-5)
    assert set(result["proba"].iloc[0]) == set(labels)
    own = build_predictor(dataclasses.replace(config, classes=None))  # the model's id2label
    answered = own.predict(pd.DataFrame({"text": texts}))["sentiment"].tolist()
    assert answered == [f"LABEL_{i}" for i in best]


def test_device_gpu_without_a_gpu_stops_a_huggingface_model(tiny_models):
    if gpu_visible():
        pytest.skip("a GPU is visible here")
    config = ModelConfig("clip", "huggingface", path=tiny_models["clip"], device="gpu")
    with pytest.raises(DiagnosticError) as no_gpu:
        build_predictor(config)
    assert no_gpu.value.diagnostics[0].code == "E403"
