"""The strip reader (strips.py): its CTC arithmetic against PyTorch's, its shipped weights and their ONNX twin, and
its training script end to end on real MNIST digits."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

from digitcnn import strip_training
from digitcnn.errors import ModelError
from digitcnn.files import file_sha256
from digitcnn.recognize import STRIP_READER, strip_reader
from digitcnn.runs import load_checkpoint_file
from digitcnn.strip_training import (
    StripTrainingConfig,
    checkpoint_path,
    load_strip_reader,
    main,
    save_strip_reader,
    synthetic_number,
    torch_reader,
    train_strip_reader,
)
from digitcnn.strips import BLANK, METADATA_KEY, OnnxStripReader, decode, log_likelihood


def test_the_log_likelihood_of_a_reading_is_pytorchs_ctc():
    log_probabilities = torch.randn(30, BLANK + 1, generator=torch.Generator().manual_seed(0)).log_softmax(1)
    for labels in ([3, 5], [3, 3], [1], [2, 2, 2], [0, 9, 0, 9]):
        expected = -torch.nn.functional.ctc_loss(
            log_probabilities[:, None], torch.tensor([labels]), [30], [len(labels)], blank=BLANK, reduction="sum"
        )
        assert log_likelihood(log_probabilities.double().numpy(), labels) == pytest.approx(float(expected), abs=1e-4)


def test_decoding_collapses_repeats_and_keeps_a_digit_written_twice():
    def frames(classes: list[int]) -> np.ndarray:
        log_probabilities = np.full((len(classes), BLANK + 1), np.log(0.01))
        log_probabilities[np.arange(len(classes)), classes] = np.log(0.9)
        return log_probabilities

    read = decode(frames([BLANK, 1, 1, BLANK, 1, 7, 7, BLANK]))
    assert [int(digit.argmax()) for digit, _ in read] == [1, 1, 7]
    assert [centre for _, centre in read] == [3.0, 9.0, 11.0]  # surest frame of each run, in input columns
    assert decode(frames([BLANK, BLANK])) == []


@pytest.fixture(scope="module")
def numbers(mnist):
    """Numbers of 2-6 touching or overlapping MNIST test digits, built as the reader's training numbers are."""
    _, (x_test, y_test) = mnist
    config = StripTrainingConfig(spacings=((-3, 0, 1.0),))
    rng = np.random.default_rng(0)
    return [synthetic_number(x_test, y_test, rng, config, 2 + index % 5) for index in range(200)]


def test_the_shipped_reader_reads_touching_test_numbers_and_its_twin_agrees(numbers):
    assert STRIP_READER.exists() and STRIP_READER.with_suffix(".onnx").exists()
    twin = OnnxStripReader(STRIP_READER.with_suffix(".onnx"))
    assert twin.source_sha256 == file_sha256(STRIP_READER), "stale twin: python -m digitcnn.strip_training"
    assert isinstance(strip_reader(), OnnxStripReader)  # predict reads blobs through it, without PyTorch
    weights = load_strip_reader(STRIP_READER)
    strips = [strip for strip, _ in numbers]
    by_torch, by_twin = torch_reader(weights)(strips), twin(strips)
    for torch_row, twin_row in zip(by_torch, by_twin, strict=True):
        np.testing.assert_allclose(twin_row, torch_row, atol=1e-4)
    exact = [
        [int(digit.argmax()) for digit, _ in decode(row)] == list(truth)
        for row, (_, truth) in zip(by_twin, numbers, strict=True)
    ]
    assert np.mean(exact) >= 0.85  # whole numbers, digits touching or sharing up to 3 columns


def test_a_file_that_is_not_a_strip_reader_is_refused_in_one_line(tmp_path):
    path = tmp_path / "reader.safetensors"
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(ModelError, match="is not a strip reader") as raised:
        load_strip_reader(path)
    assert "\n" not in str(raised.value)


def test_the_training_script_writes_a_reader_and_its_checked_twin(tmp_path, capsys):
    out = tmp_path / "reader.safetensors"
    main(["--out", str(out), "--steps", "8", "--validation-numbers", "20"])
    with safe_open(str(out), framework="pt") as handle:
        recorded = json.loads(handle.metadata()[METADATA_KEY])
    assert recorded["results"]["steps"] == 8 and len(recorded["results"]["validation_exact"]) == 4
    twin = OnnxStripReader(out.with_suffix(".onnx"))
    assert twin.source_sha256 == file_sha256(out)
    assert "step 8/8: loss" in capsys.readouterr().out
    # A further schedule from those weights (how benchmarks/README.md trained a reader further): at a learning rate
    # too small to move them, the new reader's convolutions are the old one's, and its file records its start.
    further = tmp_path / "further.safetensors"
    main(["--out", str(further), "--from", str(out), "--steps", "2", "--learning-rate", "1e-9", "--seed", "1",
          "--validation-numbers", "20"])  # fmt: skip
    with safe_open(str(further), framework="pt") as handle:
        results = json.loads(handle.metadata()[METADATA_KEY])["results"]
    assert results["started_from"] == {"sha256": file_sha256(out), **recorded["results"]}
    before, after = load_strip_reader(out).state_dict(), load_strip_reader(further).state_dict()
    for name, tensor in before.items():
        if name.endswith(".weight") and tensor.dim() > 1:  # convolutions (BatchNorm's statistics move in training)
            assert torch.allclose(after[name], tensor, atol=1e-6), name


def test_a_finer_pen_never_erases_a_number_of_hairline_strokes():
    """A 1 drawn thin on the page and taught by finetune is a one-pixel line at 28x28; the finer pen some numbers
    are drawn with would leave nothing of it, and there would be no strip to read."""
    hairline = np.zeros((1, 28, 28), np.uint8)
    hairline[0, 4:24, 14] = 255
    rng, config = np.random.default_rng(0), StripTrainingConfig()
    for _ in range(200):
        strip, labels = synthetic_number(hairline, np.array([1]), rng, config, 1)
        assert strip.max() > 0.1 and labels.tolist() == [1]


def test_an_interrupted_training_resumes_to_the_weights_of_one_never_interrupted(mnist, tmp_path, monkeypatch, capsys):
    out = tmp_path / "reader.safetensors"
    checkpoint = checkpoint_path(out)

    def arguments(steps: int = 12) -> list[str]:
        return ["--out", str(out), "--steps", str(steps), "--validation-numbers", "20", "--checkpoint-every", "4"]

    real_batch, batches = strip_training.batch, []

    def interrupted_in_step_7(*given):
        batches.append(None)
        if len(batches) == 7:
            raise KeyboardInterrupt  # Ctrl-C: the checkpoint after step 4 is the last one written
        return real_batch(*given)

    monkeypatch.setattr(strip_training, "batch", interrupted_in_step_7)
    with pytest.raises(SystemExit) as raised:
        main(arguments())
    monkeypatch.undo()
    assert raised.value.code == 130 and f"--resume continues from {checkpoint}" in capsys.readouterr().err
    assert load_checkpoint_file(checkpoint)[1]["step"] == 4 and not out.exists()
    # Other settings, starting afresh over the checkpoint, nothing to resume: one line each, the checkpoint kept.
    for argv, message in (
        ([*arguments(steps=30), "--resume"], r"made with other settings \(steps 12 there, 30 here\)"),
        (arguments(), "holds an interrupted run: pass --resume"),
        (["--out", str(tmp_path / "other.safetensors"), "--resume"], "nothing to resume"),
    ):
        with pytest.raises(SystemExit, match=message) as raised:
            main(argv)
        assert "\n" not in str(raised.value.code)
    assert checkpoint.exists()

    main([*arguments(), "--resume"])
    printed = capsys.readouterr().out
    assert "resuming after step 4/12" in printed and "step 12/12: loss" in printed
    assert OnnxStripReader(out.with_suffix(".onnx")).source_sha256 == file_sha256(out)
    assert not checkpoint.exists()  # the run finished
    (images, labels), _ = mnist
    uninterrupted = train_strip_reader(images, labels, StripTrainingConfig(steps=12), log=lambda line: None)
    resumed = load_strip_reader(out).state_dict()
    for name, tensor in uninterrupted.state_dict().items():
        assert torch.equal(resumed[name], tensor), name


@pytest.mark.parametrize("damage", ["truncated", "stale"])
def test_a_twin_that_cannot_be_opened_gives_way_to_the_weights_as_a_stale_one_does(damage, numbers, tmp_path):
    def copy_of_the_shipped_reader(folder):
        folder.mkdir()
        shutil.copy(STRIP_READER, folder)
        shutil.copy(STRIP_READER.with_suffix(".onnx"), folder)
        return folder / STRIP_READER.name

    intact = strip_reader(copy_of_the_shipped_reader(tmp_path / "intact"))
    assert isinstance(intact, OnnxStripReader)
    weights = copy_of_the_shipped_reader(tmp_path / damage)
    twin = weights.with_suffix(".onnx")
    if damage == "truncated":
        twin.write_bytes(twin.read_bytes()[: twin.stat().st_size // 2])
        with pytest.raises(ModelError, match="is not a valid ONNX model") as raised:
            OnnxStripReader(twin)
        assert "\n" not in str(raised.value)
    else:  # the same weights saved again with other results: the twin was exported from another file
        save_strip_reader(load_strip_reader(weights), weights, {"saved": "again"})
    reader = strip_reader(weights)
    assert reader is not None and not isinstance(reader, OnnxStripReader)  # PyTorch reads the weights
    strips = [strip for strip, _ in numbers[:20]]
    for by_weights, by_twin in zip(reader(strips), intact(strips), strict=True):
        np.testing.assert_allclose(by_weights, by_twin, atol=1e-4)
