"""Not a digit, opt-in (`digitcnn train --reject`): a model trained with it answers "not a digit" through the real
CLI and HTTP API with the exact fields; MNIST test digits are not flagged; models without the output (the shipped
one, every default run) answer as they always did."""

import dataclasses
import io
import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageFont

from digitcnn.cli import build_parser, main
from digitcnn.config import RECIPES, TrainConfig, read_run_config
from digitcnn.ensemble import ensemble_of
from digitcnn.inference import SHIPPED_MODEL, load_model, predict
from digitcnn.nondigits import FONT_FOLDER, GENERATOR_VERSION, blob_digits, generate, rendered_digits
from digitcnn.recognize import read_images, strip_reader
from digitcnn.rejection import NOT_A_DIGIT, REJECT, choose_threshold, flagged, rejects
from digitcnn.runs import save_model
from digitcnn.serve import create_app
from tests.conftest import ANSWER_FIELDS

TRAINING_DIGITS = 6000  # --limit: 5,400 to train on, 600 to choose the threshold on


def png(draw_on, size: int = 200) -> bytes:
    """Black ink on white paper, drawn by `draw_on(ImageDraw)`, as a PNG file's bytes."""
    image = Image.new("L", (size, size), 255)
    draw_on(ImageDraw.Draw(image))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def letter_a(draw):
    draw.text((100, 100), "A", fill=0, font=ImageFont.truetype(str(FONT_FOLDER / "DejaVuSans.ttf"), 120), anchor="mm")


def scribble(draw):
    draw.line([(30, 60), (90, 150), (120, 40), (160, 170), (60, 110), (180, 90)], fill=0, width=9, joint="curve")


def triangle(draw):
    draw.polygon([(30, 160), (170, 160), (100, 40)], outline=0, width=9)


NON_DIGITS = {"letter.png": letter_a, "scribble.png": scribble, "triangle.png": triangle}


@pytest.fixture(scope="module")
def non_digit_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("non-digits")
    for name, draw_on in NON_DIGITS.items():
        (folder / name).write_bytes(png(draw_on))
    return folder


@pytest.fixture(scope="module")
def rejecting_run(tmp_path_factory):
    """Two epochs of `fast` (batches of 64) on the first 6,000 training digits with --reject, through the real CLI:
    about as little as learns the digits (one epoch of 3,000 does not)."""
    out = tmp_path_factory.mktemp("runs") / "reject"
    arguments = ["--limit", str(TRAINING_DIGITS), "--epochs", "2", "--batch-size", "64", "--quiet", "--out", str(out)]
    assert main(["train", "--reject", *arguments]) == 0
    return out


@pytest.fixture(scope="module")
def everything_rejected(rejecting_run, tmp_path_factory):
    """The rejecting run with its stored threshold set to 0: every image it reads is "not a digit". For the tests
    of the plumbing (fields, exit codes, CSV, HTTP), which must not hang on a one-epoch model's judgement."""
    out = tmp_path_factory.mktemp("runs") / "threshold-0"
    shutil.copytree(rejecting_run, out)
    model = load_model(out)
    model.config = dataclasses.replace(model.config, not_a_digit_threshold=0.0)
    save_model(model, out)
    return out


def test_rejection_is_off_by_default_and_a_default_run_has_ten_outputs(tmp_path):
    assert TrainConfig().reject is False and not any(values.reject for values in RECIPES.values())
    assert not hasattr(build_parser().parse_args(["train"]), "reject")  # left out: the recipe's False holds
    assert build_parser().parse_args(["train", "--reject"]).reject is True
    assert main(["train", "--limit", "1000", "--epochs", "1", "--quiet", "--out", str(tmp_path / "plain")]) == 0
    plain = load_model(tmp_path / "plain")
    assert not rejects(plain.config) and plain.config.num_classes == 10 and NOT_A_DIGIT not in plain.config.class_names
    assert "test_digits_flagged" not in read_run_config(tmp_path / "plain").results


def test_reject_is_for_digit_data_only(tmp_path, capsys):
    arguments = ["train", "--reject", "--dataset", "fashion-mnist", "--out", str(tmp_path / "clothes")]
    assert main(arguments) == 2
    assert "--reject is for digits" in capsys.readouterr().err and not (tmp_path / "clothes").exists()


def test_training_with_reject_adds_the_output_and_its_threshold(rejecting_run, mnist):
    model = load_model(rejecting_run)
    assert rejects(model.config) and model.config.class_names[-1] == NOT_A_DIGIT and model.config.num_classes == 11
    assert REJECT.threshold_floor <= model.config.not_a_digit_threshold < 1
    run = read_run_config(rejecting_run)
    assert run.train.reject is True and run.model == model.config  # the weights file and config.json agree
    assert run.results["not_a_digit_threshold"] == model.config.not_a_digit_threshold
    validation_digits = TRAINING_DIGITS // 10
    assert run.results["validation_digits_flagged"] <= REJECT.digit_flag_budget + 1 / validation_digits
    assert run.results["validation_nondigits_flagged"] > 0.5
    # The one look at the test set counted the flagged test digits: the run's own 6,000.
    _, (x_test, _) = mnist
    flagged_test = flagged(predict(model, x_test[:TRAINING_DIGITS]), model.config).mean()
    assert run.results["test_digits_flagged"] == pytest.approx(flagged_test)


def test_mnist_test_digits_are_rarely_flagged_and_a_digit_file_answers_as_a_digit(
    rejecting_run, mnist, tmp_path, capsys
):
    _, (x_test, y_test) = mnist
    model = load_model(rejecting_run)
    digits, labels = x_test[7000:9000], y_test[7000:9000]  # none of the run's 6,000 test digits
    probabilities = predict(model, digits)
    assert flagged(probabilities, model.config).mean() <= 0.02  # its threshold flags 0.5% of validation digits
    assert (probabilities[:, :10].argmax(axis=1) == labels).mean() >= 0.9
    path = tmp_path / "digit.png"
    Image.fromarray(255 - x_test[0]).resize((140, 140), Image.Resampling.BICUBIC).save(path)
    assert main(["predict", "--json", "--model", str(rejecting_run), str(path)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) == ANSWER_FIELDS and answer["label"] == int(y_test[0]) and answer["error"] is None
    assert answer["not_a_digit"] < model.config.not_a_digit_threshold and len(answer["probabilities"]) == 10


def test_not_a_digit_through_the_cli(everything_rejected, non_digit_files, capsys):
    paths = [str(non_digit_files / name) for name in NON_DIGITS]
    arguments = ["--model", str(everything_rejected), *paths]
    assert main(["predict", "--json", *arguments]) == 0  # an answer about the image, not a failure to read it
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [answer["file"] for answer in answers] == paths
    for answer in answers:
        assert set(answer) == ANSWER_FIELDS
        assert answer["label"] is None and answer["unsure"] is True and answer["error"] == NOT_A_DIGIT
        assert answer["class_name"] is None and answer["confidence"] is None and answer["top3"] is not None
        assert len(answer["probabilities"]) == 10 and 0 <= answer["not_a_digit"] <= 1
        assert abs(sum(answer["probabilities"]) + answer["not_a_digit"] - 1) < 1e-3

    assert main(["predict", "--model", str(everything_rejected), paths[0]]) == 0
    assert capsys.readouterr().out.startswith(f"{paths[0]}: not a digit (probability ")
    assert main(["predict", "--csv", *arguments]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "file,label,confidence,unsure,error," + ",".join(f"p{i}" for i in range(10)) + ",not_a_digit,text"
    assert len(rows) == 4 and all(row.split(",")[4] == NOT_A_DIGIT and len(row.split(",")) == 17 for row in rows[1:])


def test_not_a_digit_and_blank_through_the_http_api(everything_rejected, non_digit_files):
    with TestClient(create_app(everything_rejected), raise_server_exceptions=False) as client:
        for name in NON_DIGITS:
            response = client.post("/api/predict", files={"file": (name, (non_digit_files / name).read_bytes())})
            assert response.status_code == 200
            answer = response.json()
            assert set(answer) == ANSWER_FIELDS and answer["file"] == name and answer["not_a_digit"] is not None
            assert answer["label"] is None and answer["unsure"] is True and answer["error"] == NOT_A_DIGIT
        blank = client.post("/api/predict", content=png(lambda draw: None))
        assert blank.status_code == 200
        assert blank.json()["error"] == "no digit found" and blank.json()["not_a_digit"] is None


def test_a_model_without_the_output_answers_as_before(mnist, non_digit_files, tmp_path, capsys):
    _, (x_test, y_test) = mnist
    model = load_model(SHIPPED_MODEL)
    assert not rejects(model.config) and model.config.num_classes == 10 and model.config.not_a_digit_threshold is None
    assert (predict(model, x_test[:500]).argmax(axis=1) == y_test[:500]).mean() >= 0.99
    run = tmp_path / "old-run"  # an old run folder: config.json without the field, its weights beside
    run.mkdir()
    shutil.copy(SHIPPED_MODEL, run / "model.safetensors")
    old = {key: value for key, value in dataclasses.asdict(model.config).items() if key != "not_a_digit_threshold"}
    (run / "config.json").write_text(json.dumps({"model": old}))
    letter = str(non_digit_files / "letter.png")
    assert main(["predict", "--json", "--model", str(run), letter]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) == ANSWER_FIELDS and answer["not_a_digit"] is None and answer["error"] is None
    assert answer["label"] in range(10) and len(answer["probabilities"]) == 10
    assert main(["predict", "--csv", "--model", str(run), letter]) == 0
    row = capsys.readouterr().out.splitlines()[1].split(",")
    assert len(row) == 17 and row[-2] == ""  # the column is there, empty: the model has no such output


def test_the_report_fits_with_held_in_non_digits_and_stores_the_threshold(rejecting_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(rejecting_run, run)
    assert main(["evaluate", "--model", str(run), "--report", str(tmp_path / "report"), "--json"]) == 0
    calibration = json.loads(capsys.readouterr().out)["calibration"]
    assert calibration["validation_examples"] == TRAINING_DIGITS // 10 + REJECT.validation_nondigits
    assert calibration["not_a_digit_threshold"] >= REJECT.threshold_floor
    calibrated = load_model(run)
    assert calibrated.config.temperature == pytest.approx(calibration["temperature"])
    assert calibrated.config.not_a_digit_threshold == pytest.approx(calibration["not_a_digit_threshold"])


def test_an_ensemble_takes_its_members_mean_threshold(rejecting_run):
    first, second = load_model(rejecting_run), load_model(rejecting_run)
    second.config = dataclasses.replace(second.config, not_a_digit_threshold=0.9)
    ensemble = ensemble_of([first, second])
    assert ensemble.config.not_a_digit_threshold == pytest.approx((first.config.not_a_digit_threshold + 0.9) / 2)
    assert ensemble.config.class_names[-1] == NOT_A_DIGIT
    assert ensemble_of([load_model(SHIPPED_MODEL)]).config.not_a_digit_threshold is None


def test_generated_non_digits_are_framed_as_mnist_and_reproducible(mnist):
    (x_train, y_train), _ = mnist
    first = generate(200, x_train[:1000], y_train[:1000], seed=3)
    assert first.shape == (200, 28, 28) and first.dtype == np.uint8
    assert np.array_equal(first, generate(200, x_train[:1000], y_train[:1000], seed=3)) and GENERATOR_VERSION >= 1
    ink = first.astype(np.float64)
    rows = np.arange(28)
    centre_row = (ink.sum(axis=2) * rows).sum(axis=1) / ink.sum(axis=(1, 2))
    centre_column = (ink.sum(axis=1) * rows).sum(axis=1) / ink.sum(axis=(1, 2))
    assert np.abs(centre_row - 14).max() <= 1 and np.abs(centre_column - 14).max() <= 1
    for image in first:  # the ink fits MNIST's 20x20 box, and fills it along its longer side
        rows, columns = np.flatnonzero(image.max(axis=1)), np.flatnonzero(image.max(axis=0))
        longer = max(rows[-1] - rows[0], columns[-1] - columns[0]) + 1
        assert 19 <= longer <= 21


def test_training_digits_rendered_as_pictures_stay_their_digits(mnist):
    (x_train, y_train), _ = mnist
    images, labels = rendered_digits(300, x_train[:2000], y_train[:2000], seed=5)
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28) and len(images) == len(labels) >= 290
    again, _ = rendered_digits(300, x_train[:2000], y_train[:2000], seed=5)
    assert np.array_equal(images, again)
    # They teach the "not a digit" output what preprocess makes of people's digits, so they must still be the
    # digits they were drawn from: the shipped reader reads them as such.
    read = predict(load_model(SHIPPED_MODEL), images).argmax(axis=1)
    assert (read == labels).mean() >= 0.97


def test_digits_cropped_out_of_touching_numbers_are_labelled_by_the_number_read(mnist):
    (x_train, y_train), _ = mnist
    images, labels = blob_digits(60, x_train[:2000], y_train[:2000], seed=5, read=strip_reader())
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28) and len(images) == len(labels) == 60
    assert np.array_equal(images, blob_digits(60, x_train[:2000], y_train[:2000], seed=5, read=strip_reader())[0])
    # Their labels are the digits the strip reader read in them, and right: the shipped reader, made for a lone
    # digit, agrees on most despite a neighbour's edge in each crop (labels out of step would agree 1 time in 10).
    read = predict(load_model(SHIPPED_MODEL), images).argmax(axis=1)
    assert (read == labels).mean() >= 0.5


def test_the_threshold_flags_at_most_the_budget_of_validation_digits():
    scores = np.linspace(0, 1, 1001)
    assert choose_threshold(scores) >= np.quantile(scores, 0.995) and choose_threshold(np.zeros(50)) == 0.5


def test_an_image_is_not_a_digit_by_its_digits_scores_or_its_whole(rejecting_run, everything_rejected, mnist):
    from digitcnn.recognize import image_score
    from tests.test_numbers import number_png

    # One digit read: its own score, or the whole image's read as one digit if that is higher (a scribble's one
    # digit-like stroke kept, the rest left out); several: their mean, over the share of the threshold it must
    # reach (the pieces of a cut non-digit each look more like a digit than the whole does), at most 1.
    assert image_score(np.array([0.2]), 0.9) == 0.9 and image_score(np.array([0.6]), None) == 0.6
    share = REJECT.several_digits_share
    assert image_score(np.array([0.1, 0.2, 0.3]), 0.99) == pytest.approx(0.2 / share)
    assert image_score(np.array([0.2, 0.9, 0.7]), 0.01) == 1.0
    _, (x_test, y_test) = mnist
    number = number_png(x_test, [0, 1, 2], "wide gaps")  # 7 2 1: digits side by side are trained as non-digits
    (reading,) = read_images(load_model(rejecting_run), [number])
    assert reading.text == "".join(map(str, y_test[:3])) and reading.error is None
    (rejected,) = read_images(load_model(everything_rejected), [number])
    assert rejected.error == NOT_A_DIGIT and rejected.text == "" and rejected.label is None
    assert [digit["label"] for digit in rejected.digits] == [None] * 3 and rejected.not_a_digit is not None


def test_a_reader_behind_a_detector_keeps_every_digit_of_the_reader(
    rejecting_run, non_digit_files, mnist, tmp_path, capsys
):
    """`digitcnn ensemble READER --detector RUN`: the shipped reader's digits in their own order, scaled by the
    detector's "is a digit"; the last class is the detector's own "not a digit", through the CLI and in ONNX."""
    _, (x_test, y_test) = mnist
    out = tmp_path / "gated"
    assert main(["ensemble", str(SHIPPED_MODEL), "--detector", str(rejecting_run), "--out", str(out)]) == 0
    capsys.readouterr()
    gated, reader, detector = load_model(out), load_model(SHIPPED_MODEL), load_model(rejecting_run)
    assert gated.config.arch == "gated" and gated.config.class_names == [*reader.config.class_names, NOT_A_DIGIT]
    assert rejects(gated.config) and read_run_config(out).results["test_accuracy"] > 0
    probabilities = predict(gated, x_test[:1000])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    readers_answers = predict(reader, x_test[:1000]).argmax(axis=1)
    np.testing.assert_array_equal(probabilities[:, :10].argmax(axis=1), readers_answers)
    np.testing.assert_allclose(probabilities[:, -1], predict(detector, x_test[:1000])[:, -1], atol=1e-5)
    # Through the command, the same "not a digit" as the detector's for a letter.
    letter = str(non_digit_files / "letter.png")
    answers = []
    for model in (out, rejecting_run):
        main(["predict", "--model", str(model), "--json", letter])
        answers.append(json.loads(capsys.readouterr().out.strip()))
    assert set(answers[0]) == ANSWER_FIELDS
    assert answers[0]["not_a_digit"] == pytest.approx(answers[1]["not_a_digit"], abs=1e-3)
    # It exports as one graph that agrees with PyTorch (export checks that on test digits itself).
    assert main(["export", "--model", str(out), "--out", str(out / "model.onnx")]) == 0


def test_a_gated_model_needs_a_reader_without_and_a_detector_with_the_output(rejecting_run, tmp_path, capsys):
    for reader, detector in ((rejecting_run, rejecting_run), (SHIPPED_MODEL, SHIPPED_MODEL)):
        assert main(["ensemble", str(reader), "--detector", str(detector), "--out", str(tmp_path / "no")]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("digitcnn: error:") and "not a digit" in error and "\n" not in error
    assert not (tmp_path / "no").exists()
