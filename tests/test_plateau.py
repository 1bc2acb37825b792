"""The "plateau" schedule: warm up over the first epoch, hold the peak while validation accuracy improves, then one
epoch of decay to zero, all within `epochs` and `time_budget`."""

import dataclasses

import pytest

from digitcnn.config import recipe
from digitcnn.train import learning_rate_at, peak_should_end

PLATEAU = dataclasses.replace(recipe("fast"), schedule="plateau", epochs=10, time_budget=None)


def test_it_warms_up_over_the_first_epoch_holds_the_peak_then_decays_over_the_last():
    steps_per_epoch = 10
    holding = [learning_rate_at(step, None, PLATEAU, steps_per_epoch) for step in range(30)]
    assert holding[0] == pytest.approx(PLATEAU.learning_rate / 10) and holding[9] == PLATEAU.learning_rate
    assert all(a < b for a, b in zip(holding[:9], holding[1:10], strict=True))
    assert set(holding[10:]) == {PLATEAU.learning_rate}
    decided = [learning_rate_at(step, 40, PLATEAU, steps_per_epoch) for step in range(40)]
    assert decided[:30] == holding  # deciding the length changes nothing already trained
    assert all(a > b for a, b in zip(decided[30:39], decided[31:40], strict=True))
    assert decided[-1] == pytest.approx(PLATEAU.learning_rate / 10)


def rows(*accuracies, seconds=10.0):
    return [{"val_accuracy": accuracy, "seconds": seconds} for accuracy in accuracies]


def test_the_peak_ends_when_validation_accuracy_stops_improving_but_not_before_two_epochs_at_it():
    assert not peak_should_end(rows(0.90, 0.89), PLATEAU, elapsed=20)  # the warm-up epoch and one at the peak
    assert not peak_should_end(rows(0.90, 0.92, 0.93), PLATEAU, elapsed=30)
    assert peak_should_end(rows(0.990, 0.9910, 0.9915), PLATEAU, elapsed=30)  # half a tenth of a point: noise
    assert peak_should_end(rows(0.90, 0.92, 0.92), PLATEAU, elapsed=30)
    assert peak_should_end(rows(0.90, 0.93, 0.92), PLATEAU, elapsed=30)


def test_the_peak_ends_in_time_for_the_decay_to_fit_epochs_and_the_time_budget():
    improving = rows(0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98)
    ends = [peak_should_end(improving[:done], PLATEAU, elapsed=10 * done) for done in range(1, 10)]
    assert ends.index(True) == 8  # after 9 epochs: the 10th, the most `epochs` allows, decays
    budget = dataclasses.replace(PLATEAU, time_budget=55.0)
    ends = [peak_should_end(improving[:done], budget, elapsed=10 * done) for done in range(1, 10)]
    assert ends.index(True) == 3  # after 4 epochs (40 s): a fifth and a decay epoch would end at 60 s > 55 s


def test_a_plateau_run_trains_until_it_decides_and_records_how_far(tmp_path, mnist):
    from digitcnn import build_model, fit

    (x_train, y_train), _ = mnist
    model = build_model("fast")
    history = fit(
        model,
        x_train[:2000],
        y_train[:2000],
        config=dataclasses.replace(PLATEAU, epochs=5),
        batch_size=64,
        verbose=False,
        run_dir=tmp_path,
    )
    epochs = len(history.epoch)
    assert 3 <= epochs <= 5
    assert history.history["learning_rate"][-1] < PLATEAU.learning_rate / 10  # it ended with its decay
    assert max(history.history["val_accuracy"]) > 0.8
