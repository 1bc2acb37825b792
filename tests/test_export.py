"""ONNX export: parity with PyTorch on real test digits, dynamic batch, the config in the file's metadata,
the export and the .onnx model through the real CLI, an ensemble as one graph, and files that are not models."""

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from digitcnn.errors import ModelError
from digitcnn.inference import evaluate, load_model, predict, predict_logits
from digitcnn.jobs import finish_run
from digitcnn.onnx_model import METADATA_KEY, TOLERANCE, OnnxModel, export_onnx
from digitcnn.runs import save_model
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def exported(small_run, tmp_path_factory):
    """The small real run exported through the Python API: (PyTorch model, .onnx path, validation report)."""
    run_dir, _ = small_run
    model = load_model(run_dir)
    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    report = export_onnx(model, path)
    return model, path, report


def test_export_validates_itself_on_a_thousand_real_digits(exported):
    model, path, report = exported
    assert path.is_file() and report["path"] == str(path)
    assert report["digits"] == 1000 and report["labels_identical"] and report["passed"]
    assert report["max_abs_difference"] <= TOLERANCE
    # The caller's model is left as it was: channels_last and in eval mode.
    first_convolution = next(module for module in model.modules() if isinstance(module, torch.nn.Conv2d))
    assert first_convolution.weight.is_contiguous(memory_format=torch.channels_last) and not model.training


def test_onnxruntime_matches_pytorch_on_other_test_digits(exported, mnist):
    model, path, _ = exported
    _, (x_test, y_test) = mnist
    digits, labels = x_test[5000:7000], y_test[5000:7000]  # none of the 1,000 the export checked itself on
    onnx_model = OnnxModel(path)
    expected, actual = predict_logits(model, digits), predict_logits(onnx_model, digits)
    assert actual.dtype == np.float32 and actual.shape == (2000, 10)
    assert np.abs(expected - actual).max() <= TOLERANCE
    assert (expected.argmax(axis=1) == actual.argmax(axis=1)).all()
    np.testing.assert_allclose(predict(onnx_model, digits), predict(model, digits), atol=1e-5)
    assert evaluate(onnx_model, digits, labels).accuracy == evaluate(model, digits, labels).accuracy


@pytest.mark.parametrize("batch_size", [1, 37])
def test_the_graph_takes_any_batch_size(exported, mnist, batch_size):
    model, path, _ = exported
    _, (x_test, _) = mnist
    digits = x_test[:batch_size]
    session = OnnxModel(path).session  # the raw graph, one batch of exactly this size
    (logits,) = session.run(["logits"], {"input": digits[:, None].astype(np.float32) / 255})
    assert logits.shape == (batch_size, 10)
    assert np.abs(logits - predict_logits(model, digits)).max() <= TOLERANCE


def test_the_file_describes_itself(exported):
    model, path, _ = exported
    graph = onnx.load(str(path))
    metadata = {entry.key: entry.value for entry in graph.metadata_props}
    assert json.loads(metadata[METADATA_KEY])["arch"] == model.config.arch
    (graph_input,), (graph_output,) = graph.graph.input, graph.graph.output
    assert graph_input.name == "input" and graph_output.name == "logits"
    input_shape = [dim.dim_param or dim.dim_value for dim in graph_input.type.tensor_type.shape.dim]
    output_shape = [dim.dim_param or dim.dim_value for dim in graph_output.type.tensor_type.shape.dim]
    assert input_shape == ["batch", 1, 28, 28] and output_shape == ["batch", 10]
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert load_model(path).config == model.config  # class names, temperature, arch, dataset: all of it


def test_a_failed_validation_leaves_the_old_file_and_nothing_else(exported, tmp_path):
    model, _, _ = exported
    path = tmp_path / "kept.onnx"
    path.write_bytes(b"the previous export")
    not_a_number = np.full((4, 28, 28), np.nan, np.float32)  # NaN logits on both sides: never "within 1e-4"
    with pytest.raises(ModelError, match="disagrees with PyTorch"):
        export_onnx(model, path, images=not_a_number)
    assert path.read_bytes() == b"the previous export"
    assert [entry.name for entry in tmp_path.iterdir()] == ["kept.onnx"]


def test_export_through_the_cli_reports_its_check(small_run, tmp_path):
    run_dir, _ = small_run
    out = tmp_path / "model.onnx"
    result = run_cli("export", "--model", run_dir, "--format", "onnx", "--out", out, check=True)
    assert out.is_file()
    assert f"wrote {out}" in result.stdout
    assert "checked against PyTorch on 1000 test digits" in result.stdout and "labels identical: yes" in result.stdout
    as_json = run_cli("export", "--model", run_dir, "--out", out, "--json", check=True)
    report = json.loads(as_json.stdout)
    assert report["passed"] and report["digits"] == 1000 and report["max_abs_difference"] <= TOLERANCE
    again = run_cli("export", "--model", out, "--out", tmp_path / "again.onnx")  # an export is not traced again
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        "digitcnn: error: export traces the model in PyTorch: pass its run folder or .safetensors, not an .onnx"
    ]


def test_predict_and_evaluate_accept_an_onnx_model(small_run, exported, mnist, tmp_path):
    run_dir, _ = small_run
    _, path, _ = exported
    _, (x_test, _) = mnist
    images = []
    for index in range(12):
        images.append(tmp_path / f"digit{index}.png")
        Image.fromarray(x_test[index]).save(images[-1])

    readings = {}
    for model in (run_dir, path):
        result = run_cli("predict", "--model", model, "--json", *images, check=True)
        readings[model] = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in readings[path]] == [r["label"] for r in readings[run_dir]]
    for onnx_reading, torch_reading in zip(readings[path], readings[run_dir], strict=True):
        np.testing.assert_allclose(onnx_reading["probabilities"], torch_reading["probabilities"], atol=1e-5)

    reports = {
        model: json.loads(run_cli("evaluate", "--model", model, "--json", check=True).stdout)
        for model in (run_dir, path)
    }
    assert reports[path]["examples"] == reports[run_dir]["examples"] == 10000
    assert reports[path]["test_accuracy"] == reports[run_dir]["test_accuracy"]
    assert reports[path]["test_loss"] == pytest.approx(reports[run_dir]["test_loss"], abs=1e-5)


def test_an_ensemble_exports_as_one_graph_of_all_its_members(mnist, tmp_path):
    out = tmp_path / "ensemble"
    run_cli(
        "train",
        "--ensemble",
        2,
        "--limit",
        3000,
        "--epochs",
        1,
        "--batch-size",
        128,
        "--out",
        out,
        "--quiet",
        check=True,
    )
    ensemble = load_model(out)
    assert ensemble.config.arch == "ensemble" and len(ensemble.members) == 2
    path = tmp_path / "ensemble.onnx"
    report = export_onnx(ensemble, path)
    assert report["passed"] and report["max_abs_difference"] <= TOLERANCE
    graph = onnx.load(str(path)).graph
    member_convolutions = sum(isinstance(module, torch.nn.Conv2d) for module in ensemble.members[0].modules())
    assert sum(node.op_type == "Conv" for node in graph.node) == 2 * member_convolutions
    onnx_model = load_model(path)
    assert onnx_model.config.members == ensemble.config.members
    _, (x_test, y_test) = mnist
    digits, labels = x_test[-1000:], y_test[-1000:]
    assert evaluate(onnx_model, digits, labels).accuracy == evaluate(ensemble, digits, labels).accuracy
    single = predict_logits(load_model(out / "members" / "0"), digits)
    assert np.abs(predict_logits(onnx_model, digits) - single).max() > 1e-3  # both members answer, not one


def test_files_that_are_not_digitcnn_onnx_models_are_one_line_errors(exported, tmp_path):
    _, path, _ = exported
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])
    foreign = tmp_path / "foreign.onnx"
    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    onnx.save(graph, str(foreign))
    cases = {
        corrupt: "is not a valid ONNX model",
        foreign: "was not exported by digitcnn",
        tmp_path / "missing.onnx": "does not exist",
    }
    for model, message in cases.items():
        for command in (["evaluate", "--model", model], ["predict", "--model", model, "digit.png"]):
            result = run_cli(*command)
            assert result.returncode == 2, result.stderr
            assert result.stderr.count("\n") == 1 and result.stderr.startswith("digitcnn: error: ")
            assert message in result.stderr and "Traceback" not in result.stderr
        with pytest.raises(ModelError, match=message):
            load_model(model)


# --- ONNX twins: an export beside its weights reads in their place, without PyTorch ---
def twin_of(run_dir, folder):
    """A copy of the small run with its ONNX twin exported through the CLI, as a user makes one."""
    run = folder / "run"
    shutil.copytree(run_dir, run)
    run_cli("export", "--model", run, "--out", run / "model.onnx", check=True)
    return run


def test_a_run_folders_twin_reads_as_its_weights_do_and_only_while_they_are_its_source(small_run, mnist, tmp_path):
    run_dir, _ = small_run
    run = twin_of(run_dir, tmp_path)
    twin, weights = load_model(run, onnx_twin=True), load_model(run)
    assert isinstance(twin, OnnxModel) and twin.config == weights.config
    assert isinstance(load_model(run / "model.safetensors", onnx_twin=True), OnnxModel)  # the file's twin too
    assert not isinstance(load_model(run), OnnxModel)  # asked for the weights, they are what loads
    _, (x_test, _) = mnist
    np.testing.assert_allclose(predict(twin, x_test[:500]), predict(weights, x_test[:500]), atol=1e-5)
    # A temperature fitted after the export changes config.json: the twin no longer says what the run is.
    config = json.loads((run / "config.json").read_text())
    config["model"]["temperature"] = 0.5
    (run / "config.json").write_text(json.dumps(config))
    assert not isinstance(load_model(run, onnx_twin=True), OnnxModel)
    # Other weights under the same name: the twin was exported from something else.
    other = twin_of(run_dir, tmp_path / "other")
    retrained = load_model(other)
    with torch.no_grad():
        next(retrained.parameters()).add_(0.01)
    save_model(retrained, other)
    assert not isinstance(load_model(other, onnx_twin=True), OnnxModel)
    assert not isinstance(load_model(other / "model.safetensors", onnx_twin=True), OnnxModel)


def test_a_trained_run_holds_its_twin_which_predict_reads_on_every_core_for_a_large_batch(small_run, mnist, tmp_path):
    run_dir, _ = small_run
    twin, weights = load_model(run_dir, onnx_twin=True), load_model(run_dir)
    assert isinstance(twin, OnnxModel) and twin.threads == 1 and twin.every_core_session is None
    _, (x_test, _) = mnist
    in_small_batches = predict_logits(twin, x_test[:1024], batch_size=64)  # the reading path's one thread
    assert twin.every_core_session is None
    np.testing.assert_allclose(predict_logits(twin, x_test[:1024]), in_small_batches, atol=TOLERANCE)
    assert twin.every_core_session is not None or twin.cores == 1
    np.testing.assert_allclose(in_small_batches, predict_logits(weights, x_test[:1024]), atol=TOLERANCE)
    image = tmp_path / "digit.png"
    Image.fromarray(255 - x_test[0]).resize((140, 140)).save(image)
    command = f"from digitcnn.cli import main; main(['predict', '--model', {str(run_dir)!r}, {str(image)!r}])"
    assert "torch" not in imported_after(command)


def test_without_the_export_extra_a_run_ends_without_a_twin_and_says_why(
    small_run, mnist, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    shutil.copytree(small_run[0], run)
    (run / "model.onnx").unlink()
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the export extra were not installed
    _, (x_test, y_test) = mnist
    results = finish_run(load_model(run), run, x_test[:500], y_test[:500])
    assert results["test_accuracy"] > 0.9 and not (run / "model.onnx").exists()
    assert "no ONNX twin written (export needs onnx: pip install 'digitcnn[export]')" in capsys.readouterr().err
    assert not isinstance(load_model(run, onnx_twin=True), OnnxModel)


def imported_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code` (a SystemExit, as --help ends, included)."""
    probe = f"import sys\ntry:\n    exec({code!r})\nexcept SystemExit:\n    pass\nprint(' '.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(result.stdout.splitlines()[-1].split())


def test_the_shipped_model_reads_through_its_twin_without_importing_pytorch(mnist, tmp_path):
    twin = load_model(None, onnx_twin=True)
    assert isinstance(twin, OnnxModel), "the shipped model's ONNX twin is missing or stale: bash scripts/ship_model.sh"
    _, (x_test, _) = mnist
    shipped = predict_logits(load_model(), x_test)
    np.testing.assert_allclose(predict_logits(twin, x_test), shipped, atol=TOLERANCE)
    image = tmp_path / "seven.png"
    Image.fromarray(255 - x_test[0]).resize((140, 140)).save(image)
    reading = json.loads(run_cli("predict", "--json", image, check=True).stdout)
    assert reading["text"] == "7"
    assert "torch" not in imported_after(f"from digitcnn.cli import main; main(['predict', {str(image)!r}])")
    # Nor numpy for --help: its import alone is a third of the 0.3-s budget on an AVX2 EPYC.
    assert {"torch", "numpy"}.isdisjoint(imported_after("from digitcnn.cli import main; main(['--help'])"))
    assert "torch" not in imported_after("import digitcnn; digitcnn.read(" + repr(str(image)) + ")")


def test_without_onnxruntime_the_weights_read_and_an_onnx_file_says_what_to_install(exported):
    _, path, _ = exported
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"  # as if the export extra were not installed
        "from digitcnn.inference import load_model\n"
        "from digitcnn.errors import ModelError\n"
        "print(type(load_model(None, onnx_twin=True)).__name__)\n"
        f"try:\n    load_model({str(path)!r})\nexcept ModelError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [
        "Classifier",
        "running an .onnx model needs onnxruntime: pip install 'digitcnn[export]'",
    ]
