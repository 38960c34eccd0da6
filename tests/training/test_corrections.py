"""Reviewers' corrections folded into training (``make train CORRECTIONS=...``): generated
splits and corrections checked against the invariants (every row read is counted once; the
validation and test splits are never touched; a correction wins; one row per model input), the
readers of a folder of JSON Lines and CSV, and a tiny-model run of the CLI that writes the
report with the validation score before and after."""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from training.corrections import CorrectionRow, accounted, fold_corrections, read_corrections
from training.data import Splits, TicketDataset
from triage_core.preprocessing import PreprocessConfig, preprocess

NORMALIZE = partial(preprocess, config=PreprocessConfig())
LABELS = ["card_arrival", "exchange_rate", "top_up_failed"]
WORDS = ["card", "rate", "top", "up", "failed", "arrived", "euro", "when", "my", "the"]

texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
labelled = st.tuples(texts, st.sampled_from(LABELS))


def dataset(rows: list[tuple[str, str]]) -> TicketDataset:
    return TicketDataset([t for t, _ in rows], [lab for _, lab in rows])


@settings(max_examples=200, deadline=None)
@given(
    train=st.lists(labelled, min_size=3, max_size=30),
    validation=st.lists(labelled, min_size=1, max_size=8),
    test=st.lists(labelled, min_size=1, max_size=8),
    corrections=st.lists(
        st.tuples(st.one_of(st.none(), texts), st.sampled_from([*LABELS, "brand_new_label"])), max_size=25
    ),
)
def test_folding_counts_every_row_once_never_touches_validation_or_test_and_a_correction_wins(
    train: list[tuple[str, str]],
    validation: list[tuple[str, str]],
    test: list[tuple[str, str]],
    corrections: list[tuple[str | None, str]],
) -> None:
    splits = Splits(
        dataset(train + [(LABELS[0], lab) for lab in LABELS]), dataset(validation), dataset(test), {}
    )
    before_val, before_test = list(splits.validation.texts), list(splits.test.labels)
    rows = [CorrectionRow(t, lab, f"{i:05d}", f"gen:{i}") for i, (t, lab) in enumerate(corrections)]
    folded, report = fold_corrections(splits, rows, NORMALIZE)

    assert accounted(report) == report["rows_read"] == len(rows)
    assert folded.validation is splits.validation and folded.test is splits.test
    assert splits.validation.texts == before_val and splits.test.labels == before_test
    held_out = {NORMALIZE(t) for t in splits.validation.texts + splits.test.texts}
    latest: dict[str, str] = {}
    for row in rows:  # later rows win (their order grows)
        if row.text and row.label in LABELS and NORMALIZE(row.text) not in held_out:
            latest[NORMALIZE(row.text)] = row.label
    folded_by_input: dict[str, list[str]] = {}
    for text, label in zip(folded.train.texts, folded.train.labels, strict=True):
        folded_by_input.setdefault(NORMALIZE(text), []).append(label)
    for key, label in latest.items():
        assert folded_by_input[key] == [label]  # exactly one row, with the correction's label
    original = {NORMALIZE(t) for t, _ in train} | {NORMALIZE(LABELS[0])}
    added = {k for k in latest if k not in original}
    assert report["added"] == len(added)
    assert not (added & held_out)
    assert (
        report["train_rows_after"]
        == len(folded.train)
        == (report["train_rows_before"] - report["train_rows_merged"] + report["added"])
    )
    assert report["skipped"].get("label not in the training data: 'brand_new_label'", 0) == sum(
        1 for t, lab in corrections if t and lab == "brand_new_label"
    )


def test_a_folder_of_json_lines_and_csv_is_read_row_by_row_and_bad_rows_are_skipped_by_reason(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.jsonl").write_text(
        json.dumps(
            {
                "id": "1",
                "source": "incoming/x.jsonl",
                "label": "card_arrival",
                "text": "my card",
                "order": "b",
            }
        )
        + "\n{not json\n"
        + json.dumps({"id": "2", "label": "exchange_rate"})
        + "\n",
        "utf-8",
    )
    (tmp_path / "b.csv").write_text("text,label\nthe euro rate,exchange_rate\n", "utf-8-sig")
    rows = read_corrections(str(tmp_path))
    assert [(r.text, r.label) for r in rows] == [
        ("my card", "card_arrival"),
        (None, None),
        (None, "exchange_rate"),
        ("the euro rate", "exchange_rate"),
    ]
    splits = Splits(
        dataset([("my card", "exchange_rate"), ("top up failed", "top_up_failed"), ("x", "card_arrival")]),
        dataset([("the euro rate", "exchange_rate")]),
        dataset([("when", "card_arrival")]),
        {},
    )
    folded, report = fold_corrections(splits, rows, NORMALIZE)
    assert (report["relabelled"], report["held_out"], report["skipped"]) == (
        1,
        1,
        {"no text": 2},
    )
    assert report["per_category"] == {
        "card_arrival": {"relabelled_to": 1},
        "exchange_rate": {"relabelled_from": 1},
    }
    assert folded.train.labels[0] == "card_arrival"


def test_make_train_with_corrections_writes_the_report_with_validation_before_and_after(
    tiny_base_model: Path, tmp_path: Path
) -> None:
    from test_train import _write_csv, tiny_dataset

    from training.__main__ import main

    data_file = _write_csv(tmp_path / "tickets.csv", tiny_dataset(12))
    out = tmp_path / "artifacts"
    argv = [
        "train",
        "--data", str(data_file),
        "--base-model", str(tiny_base_model),
        "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--threads", "1",
        "--output", str(out / "model"), "--work-dir", str(out / "work"),
        "--splits-dir", str(out / "splits"), "--reports-dir", str(out / "reports"),
        "--export", "false", "--evaluate", "false", "--baseline", "false", "--optimization-report", "false",
    ]  # fmt: skip
    assert main(argv) == 0
    first = json.loads((out / "reports" / "train_summary.json").read_text())
    validation = (out / "splits" / "validation.csv").read_text()
    with (out / "splits" / "train.csv").open(newline="", encoding="utf-8") as handle:
        relabel_text = next(row for row in csv.DictReader(handle) if row["category"] != "top_up_failed")[
            "text"
        ]
    corrections = tmp_path / "corrections.jsonl"
    corrections.write_text(
        json.dumps({"text": relabel_text, "label": "top_up_failed", "order": "1"})
        + "\n"
        + json.dumps({"text": "a brand new way to say my card never came", "label": "card_arrival"})
        + "\n"
    )
    assert main([*argv, "--corrections", str(corrections)]) == 0
    report = json.loads((out / "reports" / "corrections_report.json").read_text())
    assert report["rows_read"] == 2 and report["added"] == 1
    assert report["relabelled"] + report["confirmed"] == 1
    assert report["validation_macro_f1"]["before"] == first["best_val_macro_f1"]
    assert isinstance(report["validation_macro_f1"]["after"], float)
    summary = json.loads((out / "reports" / "train_summary.json").read_text())
    assert summary["corrections"] == report
    assert report["train_rows_after"] == report["train_rows_before"] + 1 == first["rows"]["train"] + 1
    assert (out / "splits" / "validation.csv").read_text() == validation  # the splits on disk: untouched
