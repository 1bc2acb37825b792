"""Look inside: the tiles against each model's own layer outputs (recorded here, one body module at a time), the
API's answers and refusals, and the PNG of `digitcnn explain --layers`."""

import base64
import dataclasses
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from torch import nn

from digitcnn.config import InsideConfig
from digitcnn.errors import NoLayersError
from digitcnn.explain import integrated_gradients
from digitcnn.inference import evaluate, load_model, predict, predict_logits
from digitcnn.inside import TUTORIAL_MODEL, look_inside
from digitcnn.models import ModelConfig, build_model
from digitcnn.runs import save_model_file
from tests.conftest import run_cli, tiny_benchmark

# What the view must call each layer of the shipped `best` network, written out by hand from models.py.
BEST_LABELS = [
    "Conv2d 3×3, 1 → 32, 28×28",
    "MaxPool2d 2×2, 32 channels, 14×14",
    "Conv2d 3×3, 32 → 64, 14×14",
    "Conv2d 3×3, 64 → 64, 14×14",
    "MaxPool2d 2×2, 64 channels, 7×7",
    "Conv2d 3×3, 64 → 128, 7×7",
    "Conv2d 3×3, 128 → 128, 7×7",
    "MaxPool2d 2×2, 128 channels, 3×3",
]
SEED_LABELS = [
    "Conv2d 3×3, 1 → 32, 26×26",
    "Conv2d 3×3, 32 → 64, 24×24",
    "Conv2d 3×3, 64 → 128, 22×22",
    "MaxPool2d 2×2, 128 channels, 11×11",
]
LAYER_COUNTS = {"seed": 4, "fast": 7, "strided": 6, "lean": 7, "best": 8, "deep": 9, "unpooled": 10}
MAX_RESPONSE_BYTES = 300 * 1024


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def body_outputs(model, pixels) -> dict[str, torch.Tensor]:
    """Every body module's output for one image, by the module's name, recorded by hooks on each of them."""
    outputs = {}
    handles = [
        module.register_forward_hook(lambda _, __, output, name=name: outputs.__setitem__(name, output[0]))
        for name, module in model.body.named_children()
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.as_tensor(pixels, dtype=torch.float32)[None, None])
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def expected_output(model, layer) -> str:
    """The name of the body module whose output a layer shows: a convolution's or pooling step's own, or the last
    BatchNorm or activation after it before the next layer."""
    names = [name for name, _ in model.body.named_children()]
    modules = dict(model.body.named_children())
    end = layer.name
    for name in names[names.index(layer.name) + 1 :]:
        if isinstance(modules[name], nn.Conv2d | nn.MaxPool2d | nn.AdaptiveAvgPool2d | nn.Flatten):
            break
        if isinstance(modules[name], nn.BatchNorm2d | nn.ReLU | nn.LeakyReLU):
            end = name
    return end


def check_tiles_match(model, view, outputs, most: int) -> None:
    for layer in view.layers:
        activations = outputs[expected_output(model, layer)].float()
        assert layer.shape == tuple(activations.shape)
        if activations.shape[0] > most:  # the most active by mean activation, in channel order
            ranked = sorted(range(activations.shape[0]), key=lambda channel: -float(activations[channel].mean()))
            assert layer.channels == sorted(ranked[:most])
        else:
            assert layer.channels == list(range(activations.shape[0]))
        shown = activations[layer.channels].numpy()
        assert layer.tiles.dtype == np.uint8 and layer.tiles.shape == shown.shape
        assert layer.low == pytest.approx(min(0.0, shown.min()), abs=1e-5)
        assert layer.high == pytest.approx(shown.max(), abs=1e-5)
        restored = layer.low + layer.tiles.astype(np.float64) * (layer.high - layer.low) / 255
        # Half a step of the per-layer scale, plus float noise between the two forward passes.
        np.testing.assert_allclose(restored, shown, atol=(layer.high - layer.low) / 510 + 1e-4)


def test_the_shipped_models_tiles_are_its_own_layer_outputs(mnist):
    _, (x_test, _) = mnist
    model = load_model()
    for index in range(3):
        image = x_test[index] / 255
        view = look_inside(model, image)
        assert [layer.label for layer in view.layers] == BEST_LABELS
        check_tiles_match(model, view, body_outputs(model, image), InsideConfig().tiles_per_layer)
        assert view.layers[0].parts == ["Conv2d", "BatchNorm2d", "ReLU"] and view.layers[1].parts == ["MaxPool2d"]
        np.testing.assert_allclose(view.logits, predict_logits(model, image[None])[0], atol=1e-5)
        np.testing.assert_allclose(view.probabilities, predict(model, image), atol=1e-6)
        assert view.target == int(predict(model, image).argmax())
        steps = InsideConfig().saliency_steps
        # explain's saliency, to float rounding: the view computes it on the model's BatchNorm-folded copy.
        expected = integrated_gradients(model, image, view.target, steps=steps)
        np.testing.assert_allclose(view.saliency, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
        np.testing.assert_array_equal(view.input, image.astype(np.float32))


@pytest.mark.parametrize("arch", sorted(LAYER_COUNTS))
def test_every_architecture_shows_each_block_and_pooling_step(arch, mnist):
    _, (x_test, _) = mnist
    torch.manual_seed(0)
    model = build_model(arch, activation="leaky_relu" if arch == "seed" else "relu").eval()
    image = x_test[7] / 255
    view = look_inside(model, image, target=3, config=InsideConfig(tiles_per_layer=20))
    assert len(view.layers) == LAYER_COUNTS[arch] and view.target == 3
    check_tiles_match(model, view, body_outputs(model, image), most=20)
    assert all(len(layer.channels) == min(20, layer.shape[0]) for layer in view.layers)
    if arch == "seed":
        assert [layer.label for layer in view.layers] == SEED_LABELS
        assert view.layers[0].low < 0  # LeakyReLU's negative side is kept, not cut at 0
    assert len(json.dumps(view.as_dict())) < MAX_RESPONSE_BYTES


def test_a_reader_behind_a_detector_shows_its_readers_layers_and_the_whole_models_scores(mnist):
    _, (x_test, _) = mnist
    torch.manual_seed(0)
    reader = dataclasses.asdict(ModelConfig(arch="seed", activation="leaky_relu"))
    detector = dataclasses.asdict(ModelConfig(arch="fast", num_classes=11))
    gated = build_model("gated", num_classes=11, members=[reader, detector]).eval()
    image = x_test[0] / 255
    view = look_inside(gated, image)
    assert view.arch == "seed" and [layer.label for layer in view.layers] == SEED_LABELS
    check_tiles_match(gated.members[0], view, body_outputs(gated.members[0], image), InsideConfig().tiles_per_layer)
    # The scores are the gated model's own: the reader's ten digits and the detector's "not a digit".
    assert len(view.probabilities) == 11
    np.testing.assert_allclose(view.probabilities, predict(gated, image), atol=1e-6)
    assert view.target == int(predict(gated, image).argmax())


def test_an_ensemble_and_an_onnx_model_have_no_layers_to_show(mnist, tmp_path):
    from digitcnn.onnx_model import OnnxModel, export_onnx

    _, (x_test, _) = mnist
    ensemble = build_model("ensemble", members=[dataclasses.asdict(ModelConfig(arch="fast"))] * 2).eval()
    with pytest.raises(NoLayersError, match="ensemble of 2 networks"):
        look_inside(ensemble, x_test[0] / 255)
    export_onnx(build_model("fast").eval(), tmp_path / "fast.onnx", images=x_test[:16])
    with pytest.raises(NoLayersError, match="ONNX"):
        look_inside(OnnxModel(tmp_path / "fast.onnx"), x_test[0] / 255)


def png_of(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(255 - pixels).resize((140, 140), Image.Resampling.BICUBIC).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tutorial_model(tmp_path_factory):
    """A seed network to stand in for the shipped one, so these tests hold whether or not this install ships it."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("seed") / "seed.safetensors"
    return save_model_file(build_model("seed").eval(), path)


@pytest.fixture(scope="module")
def client(tutorial_model):
    from digitcnn import serve

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serve, "TUTORIAL_MODEL", tutorial_model)
        with TestClient(serve.create_app(), raise_server_exceptions=False) as test_client:
            yield test_client


def test_the_api_answers_with_predicts_reading_and_every_layers_tiles(client, mnist):
    _, (x_test, y_test) = mnist
    body = png_of(x_test[0])
    multipart = client.post("/api/inside", files={"file": ("seven.png", body, "image/png")})
    raw = client.post("/api/inside", content=body, headers={"content-type": "image/png"})
    assert multipart.status_code == raw.status_code == 200
    answer = multipart.json()
    assert answer["layers"] == raw.json()["layers"] and raw.json()["file"] is None
    predicted = client.post("/api/predict", files={"file": ("seven.png", body, "image/png")}).json()
    assert {key: answer[key] for key in predicted} == predicted and answer["label"] == y_test[0]
    assert [layer["label"] for layer in answer["layers"]] == BEST_LABELS
    assert len(multipart.content) <= MAX_RESPONSE_BYTES
    # The tiles are the layer outputs of the 28×28 the answer says the model saw.
    model = load_model()
    seen = np.array(answer["input"], dtype=np.float32)
    outputs = body_outputs(model, seen)
    for layer in answer["layers"]:
        channels, height, width = layer["shape"]
        tiles = np.frombuffer(base64.b64decode(layer["tiles"]), np.uint8).reshape(-1, height, width)
        assert len(tiles) == len(layer["channels"]) == min(channels, InsideConfig().tiles_per_layer)
        shown = outputs[expected_output(model, SimpleNamespace(**layer))][layer["channels"]].numpy()
        restored = layer["low"] + tiles * (layer["high"] - layer["low"]) / 255
        # The answer's input is rounded to 3 decimals, so these activations differ slightly from the server's.
        assert np.abs(restored - shown).max() < 0.02 * layer["high"]
    assert np.shape(answer["saliency"]) == (28, 28) and answer["saliency_target"] == answer["label"]
    assert answer["shown"]["label"] == answer["label"] and answer["shown"]["of"] == 1
    assert answer["class_names"] == [str(digit) for digit in range(10)] and len(answer["logits"]) == 10


def test_the_tutorial_network_is_the_second_model(client, mnist):
    _, (x_test, _) = mnist
    listed = client.get("/api/inside").json()["models"]
    assert listed["default"]["arch"] == "best" and listed["default"]["layers"]
    assert listed["default"]["test_accuracy"] > 0.99 and listed["seed"]["arch"] == "seed"
    answer = client.post("/api/inside?model=seed", content=png_of(x_test[1]))
    assert answer.status_code == 200 and answer.json()["arch"] == "seed"
    assert [layer["label"] for layer in answer.json()["layers"]] == SEED_LABELS
    assert len(answer.content) <= MAX_RESPONSE_BYTES


def test_a_number_shows_its_last_digit_unless_asked_for_another(client, mnist):
    from tests.test_numbers import number_png

    _, (x_test, y_test) = mnist
    body = number_png(x_test, [0, 1, 2], "wide gaps")  # 7 2 1
    last, first = client.post("/api/inside", content=body).json(), client.post("/api/inside?digit=0", content=body)
    assert last["text"] == "".join(str(label) for label in y_test[:3]) and last["label"] is None
    assert {key: last["shown"][key] for key in ("digit", "of", "label")} == {"digit": 2, "of": 3, "label": y_test[2]}
    assert first.status_code == 200 and first.json()["shown"]["digit"] == 0
    assert first.json()["shown"]["label"] == y_test[0] == first.json()["saliency_target"]
    assert first.json()["input"] != last["input"] and len(last["input"][0]) == 28
    assert client.post("/api/inside?digit=9", content=body).json()["shown"]["digit"] == 2  # past the end: the last


def test_bad_requests_get_clear_4xx_answers(client):
    unknown = client.post("/api/inside?model=huge", content=png_of(np.zeros((28, 28), np.uint8)))
    assert unknown.status_code == 404 and "choose one of default, seed" in unknown.json()["error"]
    assert client.post("/api/inside", content=b"").status_code == 422
    assert client.post("/api/inside", files={"other": ("x.png", b"123")}).json()["error"].startswith("multipart")
    assert client.post("/api/inside", content=b"not an image").status_code == 415
    blank = client.post("/api/inside", content=png_of(np.zeros((28, 28), np.uint8)))
    assert blank.status_code == 200 and blank.json()["label"] is None and "layers" not in blank.json()


@pytest.mark.parametrize("kind", ["onnx", "ensemble"])
def test_a_served_model_without_layers_is_refused_with_422(kind, mnist, tmp_path, tutorial_model):
    from digitcnn import serve
    from digitcnn.onnx_model import export_onnx

    _, (x_test, _) = mnist
    if kind == "onnx":
        path = tmp_path / "fast.onnx"
        export_onnx(build_model("fast").eval(), path, images=x_test[:16])
    else:
        members = [dataclasses.asdict(ModelConfig(arch="fast"))] * 2
        path = save_model_file(build_model("ensemble", members=members).eval(), tmp_path / "ensemble.safetensors")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serve, "TUTORIAL_MODEL", tutorial_model)
        with TestClient(serve.create_app(path), raise_server_exceptions=False) as served:
            refused = served.post("/api/inside", content=png_of(x_test[0]))
            assert refused.status_code == 422
            assert ("ONNX" if kind == "onnx" else "ensemble of 2 networks") in refused.json()["error"]
            listed = served.get("/api/inside").json()["models"]
            assert not listed["default"]["layers"] and listed["default"]["error"] == refused.json()["error"]
            assert served.post("/api/inside?model=seed", content=png_of(x_test[0])).status_code == 200
            assert served.post("/api/predict", content=png_of(x_test[0])).status_code == 200


def test_explain_layers_writes_the_view_as_one_png(mnist, tmp_path):
    _, (x_test, y_test) = mnist
    image = tmp_path / "digit.png"
    image.write_bytes(png_of(x_test[0]))
    out = tmp_path / "inside.png"
    result = run_cli("explain", image, "--layers", "--out", out, check=True)
    assert result.stdout.startswith(f"{y_test[0]} (") and out.exists()
    with Image.open(out) as figure:
        assert figure.format == "PNG" and figure.width == 1000 and figure.height > 1000
        pixels = np.asarray(figure.convert("L"))
    assert (pixels < 64).mean() > 0.1  # the dark feature maps fill much of it
    plain = tmp_path / "plain.png"
    run_cli("explain", image, "--out", plain, check=True)
    with Image.open(plain) as figure:
        assert figure.height < 600  # without --layers: only the saliency figure

    members = [dataclasses.asdict(ModelConfig(arch="fast"))] * 2
    ensemble = save_model_file(build_model("ensemble", members=members).eval(), tmp_path / "ensemble.safetensors")
    refused = run_cli("explain", image, "--layers", "--model", ensemble, "--out", tmp_path / "no.png")
    assert refused.returncode == 2 and not (tmp_path / "no.png").exists()
    assert refused.stderr.count("\n") == 1 and "ensemble of 2 networks" in refused.stderr


def test_a_model_stored_in_float16_loads_as_float32_and_predicts_alike(mnist, tmp_path):
    from digitcnn.runs import load_model_file

    _, (x_test, _) = mnist
    model = load_model()  # trained weights, so the logits are of a real network's size
    path = save_model_file(model, tmp_path / "half.safetensors", {"test_accuracy": 0.5}, dtype=torch.float16)
    assert path.stat().st_size < 0.6 * save_model_file(model, tmp_path / "full.safetensors").stat().st_size
    restored = load_model_file(path)
    assert all(parameter.dtype == torch.float32 for parameter in restored.parameters())
    assert restored.config == model.config
    expected, actual = predict_logits(model, x_test[:500]), predict_logits(restored, x_test[:500])
    assert np.abs(actual - expected).max() < 0.05 * np.abs(expected).max()
    assert (actual.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.998


@pytest.mark.skipif(not TUTORIAL_MODEL.exists(), reason="this install does not ship the tutorial's network")
def test_the_shipped_tutorial_network_is_the_trained_seed_model(mnist):
    from digitcnn.runs import load_weights_file, model_results

    _, (x_test, y_test) = mnist
    model = load_model(TUTORIAL_MODEL)
    assert model.config.arch == "seed" and all(p.dtype == torch.float32 for p in model.parameters())
    tensors, _ = load_weights_file(TUTORIAL_MODEL)
    assert {tensor.dtype for tensor in tensors.values()} == {torch.float16}
    results = model_results(TUTORIAL_MODEL)
    assert "--arch seed --epochs 20 --seed 0" in results["command"]
    assert abs(results["test_accuracy_float16"] - results["test_accuracy"]) <= 0.001
    # An accuracy floor on a slice: the tutorial's network reaches ~99% after its 20 epochs.
    assert evaluate(model, x_test[:2000], y_test[:2000]).accuracy >= 0.98


def test_the_benchmark_measures_time_size_and_saliency_steps(tmp_path):
    report, result = tiny_benchmark("inside", tmp_path)
    figures = report["models"]["default"]
    assert figures["arch"] == "best" and figures["requests"] == 8
    assert 0 < figures["server_ms"]["p50"] <= figures["server_ms"]["p90"] and figures["server_cpu_ms"]["p50"] > 0
    assert 50_000 < figures["response_bytes"]["max"] <= MAX_RESPONSE_BYTES
    sweep = figures["by_saliency_steps"]
    assert set(sweep) == {"4", "16"} and sweep["16"]["saliency_cosine_to_64_steps"]["min"] > 0.9
    assert "server time p50" in result.stdout
