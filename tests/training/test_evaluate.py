"""Evaluation of the served (int8) artifact: report contents, plots, errors, command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from training.evaluate import (
    EvaluationError,
    classification_report,
    evaluate_artifact,
    main,
    write_evaluation,
)
from triage_core.inference import ArtifactClassifier

TEXTS = [
    "my new card still has not arrived",
    "when will my card arrive?",
    "I lost my card on the train",
    "someone stole my wallet with my card in it",
    "what exchange rate do you use?",
    "the exchange rate on my statement looks wrong",
    "my top up did not go through",
    "top-up failed again, why?",
    "I was promised a refund but it's not in my account",
    "where is my refund?",
    "Hi,\n\ncard not here yet :(\n\nThanks,\nBob",
    "can I get my money back for this purchase",
]


@pytest.fixture(scope="module")
def labelled(tiny_labels: list[str]) -> tuple[list[str], list[str]]:
    truth = [
        "card_arrival",
        "card_arrival",
        "lost_or_stolen_card",
        "lost_or_stolen_card",
        "exchange_rate",
        "exchange_rate",
        "top_up_failed",
        "top_up_failed",
        "refund_not_showing_up",
        "refund_not_showing_up",
        "card_arrival",
        "refund_not_showing_up",
    ]
    assert set(truth) == set(tiny_labels)
    return TEXTS, truth


@pytest.fixture(scope="module")
def report(tiny_artifact: Path, labelled: tuple[list[str], list[str]]) -> dict:
    return evaluate_artifact(tiny_artifact, *labelled)


def test_report_keys_and_consistency(report: dict, tiny_labels: list[str], labelled, tiny_artifact) -> None:
    for key in (
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "micro_precision",
        "micro_recall",
        "micro_f1",
        "weighted_precision",
        "weighted_recall",
        "weighted_f1",
        "top3_accuracy",
    ):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["labels"] == tiny_labels  # manifest order
    assert list(report["per_class"]) == tiny_labels
    for metrics in report["per_class"].values():
        assert set(metrics) == {"precision", "recall", "f1", "support", "predicted"}
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (5, 5)
    assert cm.sum() == len(TEXTS)
    np.testing.assert_array_equal(
        cm.sum(axis=1), [report["per_class"][lab]["support"] for lab in tiny_labels]
    )
    np.testing.assert_array_equal(
        cm.sum(axis=0), [report["per_class"][lab]["predicted"] for lab in tiny_labels]
    )
    assert report["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert report["micro_f1"] == pytest.approx(report["accuracy"])  # single-label classification
    assert report["counts"] == {
        "examples": 12,
        "correct": int(np.trace(cm)),
        "errors": 12 - int(np.trace(cm)),
        "labels_in_model": 5,
        "labels_in_data": 5,
    }
    assert report["model"]["quantization"] == "int8"

    # It is the served model's answer: the same argmax as ArtifactClassifier.
    predicted = ArtifactClassifier(tiny_artifact).predict_scores(labelled[0]).argmax(axis=1)
    rebuilt = np.zeros_like(cm)
    for truth, pred in zip(labelled[1], predicted, strict=True):
        rebuilt[tiny_labels.index(truth), pred] += 1
    np.testing.assert_array_equal(rebuilt, cm)


def test_metrics_match_scikit_learn(report: dict, tiny_labels: list[str], labelled, tiny_artifact) -> None:
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    predicted = ArtifactClassifier(tiny_artifact).predict_scores(labelled[0]).argmax(axis=1)
    y_pred = [tiny_labels[i] for i in predicted]
    y_true = labelled[1]
    assert report["macro_f1"] == pytest.approx(
        f1_score(y_true, y_pred, labels=tiny_labels, average="macro", zero_division=0)
    )
    assert report["weighted_f1"] == pytest.approx(
        f1_score(y_true, y_pred, labels=tiny_labels, average="weighted", zero_division=0)
    )
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=tiny_labels, zero_division=0)
    for i, label in enumerate(tiny_labels):
        assert report["per_class"][label]["precision"] == pytest.approx(p[i])
        assert report["per_class"][label]["recall"] == pytest.approx(r[i])
        assert report["per_class"][label]["f1"] == pytest.approx(f[i])
        assert report["per_class"][label]["support"] == s[i]


def test_known_confusion_matrix() -> None:
    """Hand-checked numbers: 3 classes, one class absent from the data (macro ignores it)."""
    y_true = np.array([0, 0, 0, 1, 1])
    scores = np.eye(3)[[0, 0, 1, 1, 2]]
    r = classification_report(y_true, scores, ["a", "b", "c"])
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 0]]
    assert r["accuracy"] == pytest.approx(0.6)
    assert r["per_class"]["a"] == {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3, "predicted": 2}
    assert r["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert r["macro_f1"] == pytest.approx((0.8 + 0.5) / 2)  # "c" has no support
    assert r["counts"]["labels_in_data"] == 2
    assert r["top_confusions"][0]["count"] == 1
    assert r["top3_accuracy"] == 1.0


def test_unknown_labels_are_a_clear_error(tiny_artifact: Path) -> None:
    with pytest.raises(EvaluationError, match=r"1 label\(s\) in the data are unknown.*'not_a_label'"):
        evaluate_artifact(tiny_artifact, ["a", "b"], ["card_arrival", "not_a_label"])
    with pytest.raises(EvaluationError, match="2 texts but 1 labels"):
        evaluate_artifact(tiny_artifact, ["a", "b"], ["card_arrival"])


def test_write_evaluation_files(report: dict, tmp_path: Path) -> None:
    paths = write_evaluation(report, tmp_path / "eval")
    assert json.loads(paths["metrics"].read_text("utf-8"))["macro_f1"] == report["macro_f1"]
    for key in ("confusion_matrix", "per_class_f1"):
        with Image.open(paths[key]) as image:
            image.verify()
        with Image.open(paths[key]) as image:
            assert image.format == "PNG"
            assert min(image.size) >= 300


def test_confusion_matrix_png_scales_to_77_classes(tmp_path: Path) -> None:
    labels = [f"intent_{i:02d}_with_a_long_name" for i in range(77)]
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(77), 5)
    r = classification_report(y, 0.6 * rng.random((len(y), 77)) + np.eye(77)[y], labels)
    paths = write_evaluation(r, tmp_path)
    with Image.open(paths["confusion_matrix"]) as image:
        assert min(image.size) >= 2000  # ~25 px per cell
    with Image.open(paths["per_class_f1"]) as image:
        assert image.size[1] >= 1500  # one readable row per class


def write_csv(path: Path, texts: list[str], labels: list[str], label_column: str = "category") -> Path:
    import csv

    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", label_column])
        writer.writerows(zip(texts, labels, strict=True))
    return path


def test_cli_with_noisy_comparison(tiny_artifact: Path, labelled, tmp_path: Path, capsys) -> None:
    data = write_csv(tmp_path / "test.csv", *labelled)
    out = tmp_path / "eval"
    assert main(["--model", str(tiny_artifact), "--data", str(data), "--out", str(out), "--noisy"]) == 0
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    assert {"accuracy", "macro_f1", "micro_f1", "per_class"} <= set(metrics)
    assert metrics["data"]["rows_kept"] == 12
    assert set(metrics["clean_vs_noisy"]["metrics"]["macro_f1"]) == {"clean", "noisy", "delta"}
    assert metrics["noisy"]["macro_f1"] == metrics["clean_vs_noisy"]["metrics"]["macro_f1"]["noisy"]
    noisy = json.loads((out / "noisy" / "metrics.json").read_text("utf-8"))
    assert noisy["data"]["noise"] == {"pool": "eval", "seed": 2024}
    for directory in (out, out / "noisy"):
        assert (directory / "confusion_matrix.png").is_file()
        assert (directory / "per_class_f1.png").is_file()
    assert "| macro_f1 |" in capsys.readouterr().out


def test_cli_noisy_validation_uses_the_select_pool(tiny_artifact: Path, labelled, tmp_path: Path) -> None:
    """The validation split is scored noisy with the pool that ranks candidates ('select'), never
    the test split's ('eval'): the two runs wrap the same tickets in different noise."""
    from training.noise import noisy_variant

    data = write_csv(tmp_path / "validation.csv", *labelled)
    out = tmp_path / "eval"
    argv = ["--model", str(tiny_artifact), "--data", str(data), "--out", str(out), "--noisy"]
    assert main([*argv, "--noise-pool", "select"]) == 0
    noisy = json.loads((out / "noisy" / "metrics.json").read_text("utf-8"))
    assert noisy["data"]["noise"] == {"pool": "select", "seed": 2024}
    texts = labelled[0]
    assert noisy_variant(texts, seed=2024, pool="select") != noisy_variant(texts, seed=2024, pool="eval")
    with pytest.raises(SystemExit):
        main([*argv, "--noise-pool", "train"])  # a training pool is not a held-out one


def test_cli_errors_are_clear(tiny_artifact: Path, labelled, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "test.csv", labelled[0], ["card_arrival"] * 11 + ["brand_new_intent"])
    with pytest.raises(SystemExit, match="unknown to the model"):
        main(["--model", str(tiny_artifact), "--data", str(data), "--out", str(tmp_path / "o")])
    base = ["--model", str(tiny_artifact), "--data", str(data), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="missing column"):
        main([*base, "--label-column", "intent"])
    with pytest.raises(SystemExit, match="not a model artifact"):
        main(["--model", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "o")])


def test_module_entry_points(tiny_artifact: Path, labelled, tmp_path: Path) -> None:
    """``python -m training evaluate`` (the Makefile's) and ``python -m training.evaluate``."""
    data = write_csv(tmp_path / "test.jsonl.csv", *labelled)
    for i, module in enumerate((["training", "evaluate"], ["training.evaluate"])):
        out = tmp_path / f"out{i}"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                *module,
                "--model",
                str(tiny_artifact),
                "--data",
                str(data),
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads((out / "metrics.json").read_text("utf-8"))["counts"]["examples"] == 12


def test_review_threshold_is_the_lowest_score_that_meets_the_target() -> None:
    import numpy as np

    from training.evaluate import review_curve

    top = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([True, True, True, True, False, True, False, False])
    # accepting the top 4 is 100 % right, the top 6 is 5/6 = 83 %, the top 5 is 80 %
    assert review_curve(top, correct, 0.8) == {
        "threshold": 0.6,
        "accepted_accuracy": 5 / 6,
        "review_share": 0.25,
    }
    assert review_curve(top, correct, 1.0)["threshold"] == 0.8
    nothing = review_curve(top, np.zeros(8, dtype=bool), 0.5)
    assert nothing["threshold"] == 1.0 and nothing["review_share"] == 1.0


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from([0.3, 0.5, 0.7, 0.85, 0.9, 0.95, 1.0]), st.booleans()), min_size=1
    ),
    target=st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.98, 1.0]),
)
def test_the_accepted_tickets_reach_the_target_even_with_tied_scores(rows, target) -> None:
    """Tied scores (duplicate tickets get the same scores) are accepted or reviewed together: the
    accepted set is {score >= threshold} and meets the target; no larger such set exists (brute
    force over every threshold). Regression: a prefix that stopped inside a run of ties gave a
    threshold whose accepted tickets were 97 % right for a 98 % target."""
    import numpy as np

    from training.evaluate import review_curve

    top = np.array([r[0] for r in rows])
    correct = np.array([r[1] for r in rows])
    choice = review_curve(top, correct, target)
    feasible = [t for t in np.unique(top) if correct[top >= t].mean() >= target]
    if not feasible:
        assert choice["review_share"] == 1.0
        return
    accepted = top >= choice["threshold"]
    assert correct[accepted].mean() >= target
    assert choice["review_share"] == pytest.approx(1 - accepted.mean())
    assert choice["review_share"] == pytest.approx(min(1 - (top >= t).mean() for t in feasible))


def test_bootstrap_intervals_are_seeded_and_match_sklearn_on_a_resample() -> None:
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    from training.evaluate import bootstrap_intervals

    rng = np.random.default_rng(7)
    y_true = rng.integers(0, 5, 400)
    y_pred = np.where(rng.random(400) < 0.8, y_true, rng.integers(0, 5, 400))
    first = bootstrap_intervals(y_true, y_pred, 5, resamples=200, seed=3)
    assert first == bootstrap_intervals(y_true, y_pred, 5, resamples=200, seed=3)  # same seed, same interval
    low, high = first["macro_f1"]
    assert low < f1_score(y_true, y_pred, average="macro") < high
    low, high = first["accuracy"]
    assert low < accuracy_score(y_true, y_pred) < high
    # the resampling itself: a single resample's numbers are scikit-learn's on those rows
    one = bootstrap_intervals(y_true, y_pred, 5, resamples=1, seed=11)
    idx = np.random.default_rng(11).integers(0, 400, 400)
    present = sorted(set(y_true[idx]))
    assert one["macro_f1"][0] == round(f1_score(y_true[idx], y_pred[idx], labels=present, average="macro"), 4)
    assert one["accuracy"][0] == round(accuracy_score(y_true[idx], y_pred[idx]), 4)
    # ten times the tickets, about a third of the width
    wide = bootstrap_intervals(y_true[:40], y_pred[:40], 5, resamples=500)
    narrow = bootstrap_intervals(np.tile(y_true[:40], 10), np.tile(y_pred[:40], 10), 5, resamples=500)
    assert (narrow["accuracy"][1] - narrow["accuracy"][0]) < 0.5 * (wide["accuracy"][1] - wide["accuracy"][0])


def test_wilson_interval_of_a_known_proportion() -> None:
    from training.evaluate import wilson_interval

    # 8 of 10: the Wilson score interval at 95 % is 0.490 to 0.943 (Wilson 1927; Newcombe 1998, table I)
    assert wilson_interval(8, 10) == (0.4902, 0.9433)
    assert wilson_interval(0, 0) is None


def test_minimum_validation_tickets_follow_the_target() -> None:
    from training.evaluate import min_validation_tickets

    assert min_validation_tickets(0.98) == 189  # 1.96^2 x 0.98 x 0.02 / 0.02^2
    assert min_validation_tickets(0.95) == 457
    assert min_validation_tickets(1.0) == 100  # the floor


def test_review_ceiling_wins_when_the_target_cannot_be_met() -> None:
    """Issue #20: 98 % sent 97 % of the tickets to review. With a ceiling the threshold sends
    the ceiling's share and says so; within it the target's threshold is kept."""
    import numpy as np

    from training.evaluate import review_curve, review_threshold

    rng = np.random.default_rng(0)
    top = rng.random(1000)
    correct = rng.random(1000) < 0.5 + 0.45 * top  # higher scores are right more often
    alone = review_curve(top, correct, 0.98)
    assert alone["review_share"] > 0.9  # the target alone sends almost everything to review
    capped = review_threshold(top, correct, 0.98, max_review_share=0.3)
    assert capped["rule"].startswith("ceiling") and not capped["target_met"]
    assert capped["review_share"] == pytest.approx(0.3, abs=0.002)
    assert capped["accepted_accuracy"] == pytest.approx(correct[top >= capped["threshold"]].mean())
    assert capped["accepted_accuracy"] < 0.98
    assert any("cannot be met with at most 30%" in w for w in capped["warnings"])
    # a reachable target within the ceiling: the same threshold as before the ceiling existed
    easy = review_threshold(top, correct, 0.9, max_review_share=0.8)
    assert easy["rule"].startswith("target") and easy["target_met"]
    assert easy["threshold"] == review_curve(top, correct, 0.9)["threshold"]
    assert easy["accepted_tickets"] == int((top >= easy["threshold"]).sum())
    low, high = easy["accepted_accuracy_interval_95"]
    assert low < easy["accepted_accuracy"] < high
    assert not any("rests on" in w for w in easy["warnings"])  # 1,000 tickets are enough for 90 %


def test_review_threshold_warns_on_a_handful_of_tickets() -> None:
    import numpy as np

    from training.evaluate import review_threshold

    top = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([True, True, True, False, True, False])
    choice = review_threshold(top, correct, 0.98)
    warning = next(w for w in choice["warnings"] if "rests on" in w)
    assert "rests on 6 validation tickets" in warning and "at least 189" in warning
    assert choice["validation_tickets"] == 6 and choice["min_validation_tickets"] == 189


def test_coverage_curve_runs_from_the_most_confident_ticket_to_all() -> None:
    import numpy as np

    from training.evaluate import coverage_curve

    top = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([True, True, True, True, False, True, False, False])
    curve = coverage_curve(top, correct, points=5)
    assert curve[0] == {"threshold": 0.99, "coverage": 0.125, "review_share": 0.875, "accepted_accuracy": 1.0}
    assert curve[-1] == {"threshold": 0.4, "coverage": 1.0, "review_share": 0.0, "accepted_accuracy": 0.625}
    assert [p["coverage"] for p in curve] == sorted(p["coverage"] for p in curve)


def test_review_coverage_plot_is_written(tmp_path: Path) -> None:
    import numpy as np

    from training.evaluate import coverage_curve, review_threshold
    from training.plots import plot_review_coverage

    rng = np.random.default_rng(1)
    top = rng.random(300)
    correct = rng.random(300) < top
    review = review_threshold(top, correct, 0.9, 0.4)
    review["validation_curve"] = review["test_curve"] = coverage_curve(top, correct)
    path = plot_review_coverage(review, tmp_path / "review_coverage.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
