"""What an ensemble run is made of, as JSON for the README: each member's architecture, seed, training time and
test accuracy (as its run recorded them), the ensemble's test accuracy (recorded once, when it was made), and on
the validation split every member held out (if they held one out): each member's accuracy, the ensemble's, and
how many validation digits all members get wrong — mistakes no averaging can remove. Nothing here looks at the
test set again.

With --candidate, models trained apart on the same training digits are judged as would-be members before anyone
trains an ensemble of them: each one's validation mistakes, how many of the mistakes all members share it gets
right, and the validation mistakes of the ensemble with it added. Their test accuracy is not read.

    .venv/bin/python -m benchmarks.ensemble runs/ensemble-40ep --out benchmarks/results/ensemble-40ep.json
    .venv/bin/python -m benchmarks.ensemble runs/ensemble-40ep --candidate runs/probe-unpooled-40ep --out FILE.json
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import machine, write_result
from digitcnn.config import DataConfig, read_run_config
from digitcnn.inference import load_model, predict_logits
from digitcnn.jobs import load_split, trained_on
from digitcnn.metrics import softmax
from digitcnn.report import validation_slice
from digitcnn.runs import MEMBERS_FOLDER


def member_folders(source: Path) -> list[Path]:
    """The run folders of the single models in `source`: an ensemble's members/N, those of the runs it was
    combined from, or `source` itself."""
    if (source / MEMBERS_FOLDER).is_dir():
        return sorted((source / MEMBERS_FOLDER).iterdir(), key=lambda folder: int(folder.name))
    ensemble = read_run_config(source).ensemble
    sources = (ensemble.sources if ensemble else None) or []
    return [folder for part in sources for folder in member_folders(Path(part))] or [source]


def summarize(run: Path, candidates: tuple[Path, ...] = ()) -> dict:
    config = read_run_config(run)
    members = member_folders(run)
    if members == [run]:
        raise SystemExit(f"{run} is not an ensemble run folder")
    member_configs = [read_run_config(folder) for folder in members]
    data = trained_on(members[0])
    if any(trained_on(folder) != data for folder in members):
        raise SystemExit(f"{run}: its members did not all hold out the same validation split")
    for candidate in candidates:
        if trained_on(candidate) != data:
            raise SystemExit(f"{candidate} did not hold out the validation digits {run}'s members held out")
    if candidates and not data.validation_split:
        raise SystemExit(f"{run}: its members held out no validation digits to judge a candidate on")
    results = config.results
    return {
        "benchmark": f"ensemble of {len(members)}",
        "run": str(run),
        "test_accuracy": results["test_accuracy"],
        "test_error": round(1 - results["test_accuracy"], 6),
        # Members trained on the whole training set (--validation-split 0) leave no digit to judge them on.
        **(validation_figures(run, data, candidates) if data.validation_split else {"validation_examples": 0}),
        "members": [str(folder) for folder in members],
        "member_archs": [member.model.arch for member in member_configs],
        "member_seeds": [member.train.seed for member in member_configs],
        "member_epochs": [member.train.epochs for member in member_configs],
        "member_precisions": [member.train.precision for member in member_configs],
        "member_test_accuracies": [member.results["test_accuracy"] for member in member_configs],
        "member_train_seconds": [member.results["train_seconds"] for member in member_configs],
        "train_seconds": round(sum(member.results["train_seconds"] for member in member_configs), 2),
        **machine(),
    }


def validation_figures(run: Path, data: DataConfig, candidates: tuple[Path, ...] = ()) -> dict:
    """The ensemble's and each member's mistakes on the validation split all members held out (`data`), and each
    candidate's against them."""
    (x_train, y_train), _ = load_split(data)
    x_validation, y_validation = validation_slice(x_train, y_train, data.validation_split)
    # At temperature 1, as Ensemble.forward averages them: a member's own fitted temperature is not the ensemble's.
    ensemble = load_model(run)
    probabilities = np.stack([softmax(predict_logits(member, x_validation)) for member in ensemble.members])
    member_wrong = probabilities.argmax(axis=2) != y_validation  # (members, digits)
    ensemble_wrong = probabilities.mean(axis=0).argmax(axis=1) != y_validation
    return {
        "validation_examples": len(y_validation),
        "validation_accuracy": 1 - float(ensemble_wrong.mean()),
        "validation_errors": int(ensemble_wrong.sum()),
        "validation_errors_all_members_make": int(member_wrong.all(axis=0).sum()),
        "validation_errors_any_member_makes": int(member_wrong.any(axis=0).sum()),
        "member_validation_errors": member_wrong.sum(axis=1).tolist(),
        # How many members it takes: the ensemble of the first k members, k = 1, 2, ..., as trained.
        "validation_errors_of_first_members": [
            int((probabilities[:count].mean(axis=0).argmax(axis=1) != y_validation).sum())
            for count in range(1, len(probabilities) + 1)
        ],
        **(
            {
                "candidates": [
                    candidate_figures(
                        candidate, x_validation, y_validation, probabilities, member_wrong, ensemble_wrong
                    )
                    for candidate in candidates
                ]
            }
            if candidates
            else {}
        ),
    }


def candidate_figures(
    candidate: Path, x_validation, y_validation, member_probabilities, member_wrong, ensemble_wrong
) -> dict:
    """Whether `candidate` would help as one more member: a model that gets right none of the digits all members
    miss can only trade one of the ensemble's other mistakes for another."""
    model = load_model(candidate)
    probabilities = softmax(predict_logits(model, x_validation))
    wrong = probabilities.argmax(axis=1) != y_validation
    all_members_wrong = member_wrong.all(axis=0)
    with_candidate = np.concatenate([member_probabilities, probabilities[None]]).mean(axis=0)
    return {
        "run": str(candidate),
        "arch": model.config.arch,
        "validation_errors": int(wrong.sum()),
        "right_where_all_members_are_wrong": int((~wrong & all_members_wrong).sum()),
        "wrong_where_the_ensemble_is_wrong": int((wrong & ensemble_wrong).sum()),
        "validation_errors_of_ensemble_with_it": int((with_candidate.argmax(axis=1) != y_validation).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="an ensemble run folder (train --ensemble, or digitcnn ensemble)")
    parser.add_argument(
        "--candidate",
        type=Path,
        action="append",
        default=[],
        help="a model trained apart on the same digits, judged as one more member (repeatable)",
    )
    parser.add_argument("--out", required=True, help="where to write the JSON")
    arguments = parser.parse_args()
    summary = summarize(arguments.run, tuple(arguments.candidate))
    members = ", ".join(f"{accuracy:.2%}" for accuracy in summary["member_test_accuracies"])
    print(f"members' test accuracy: {members}", file=sys.stderr)
    if summary["validation_examples"]:
        validation = (
            f"validation {summary['validation_accuracy']:.2%} ({summary['validation_errors']} of "
            f"{summary['validation_examples']:,} wrong; all members wrong on "
            f"{summary['validation_errors_all_members_make']})"
        )
    else:
        validation = "no validation split (members trained on the whole training set)"
    print(f"ensemble: test {summary['test_accuracy']:.2%}, {validation}", file=sys.stderr)
    for candidate in summary.get("candidates", []):
        print(
            f"candidate {candidate['run']} ({candidate['arch']}): {candidate['validation_errors']} validation "
            f"mistakes, right on {candidate['right_where_all_members_are_wrong']} all members miss; the ensemble "
            f"with it: {candidate['validation_errors_of_ensemble_with_it']}",
            file=sys.stderr,
        )
    write_result(arguments.out, summary)


if __name__ == "__main__":
    main()
