"""Ticket loader errors and reports, stratified reproducible splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from training.data import (
    DEFAULT_DATA,
    DataError,
    dedupe_model_inputs,
    load_or_create_splits,
    load_tickets,
    split_dataset,
)


def _csv(path: Path, rows: list[tuple[str, str]], header: str = "text,category", encoding="utf-8") -> Path:
    lines = [header] + [f'"{t}",{label}' for t, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


def _rows(n_labels: int = 3, per_label: int = 10) -> list[tuple[str, str]]:
    return [(f"ticket {i} about topic {k}", f"label_{k}") for k in range(n_labels) for i in range(per_label)]


def test_loads_csv_and_jsonl_with_custom_columns(tmp_path: Path) -> None:
    rows = _rows()
    csv_data = load_tickets(_csv(tmp_path / "t.csv", rows, header="body,intent"), "body", "intent")
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps({"body": t, "intent": lab, "id": i}) for i, (t, lab) in enumerate(rows))
    )
    jsonl_data = load_tickets(jsonl, "body", "intent")
    assert csv_data.texts == jsonl_data.texts == [t for t, _ in rows]
    assert csv_data.labels == jsonl_data.labels
    assert csv_data.label_names == ["label_0", "label_1", "label_2"]
    assert csv_data.report["format"] == "csv" and jsonl_data.report["format"] == "jsonl"


def test_quoted_multiline_csv_field_and_utf8_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    body = 'text,category\n"line one\nline two, with comma",a\nx,a\ny,b\nz,b\n'
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    data = load_tickets(path)
    assert data.texts[0] == "line one\nline two, with comma"


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("", {}, "empty"),
        ("text,category\n", {}, "no data rows"),
        ("body,category\nhello,a\n", {}, r"missing column\(s\) \['text'\]"),
        ("text,category\nhello,a\n", {"encoding": "klingon-8"}, "unknown encoding"),
    ],
)
def test_clear_errors(tmp_path: Path, content: str, kwargs: dict, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_tickets(path, **kwargs)


def test_undecodable_file_names_the_line_and_a_fix(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("text,category\nok,a\ncaf\xe9 card,a\nno,b\nyes,b\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not valid utf-8.*line 3.*--encoding latin-1"):
        load_tickets(path)
    assert load_tickets(path, encoding="latin-1", min_examples=1).texts[1] == "café card"


def test_missing_jsonl_field_and_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"missing field\(s\) \['category'\]"):
        load_tickets(path)
    path.write_text('{"text": "a", "category": "x"}\n{oops\n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load_tickets(path)


def test_rare_labels_are_an_error(tmp_path: Path) -> None:
    rows = [*_rows(2, 5), ("only one of these", "rare")]
    with pytest.raises(DataError, match=r"fewer than 2 examples.*'rare': 1"):
        load_tickets(_csv(tmp_path / "t.csv", rows))


def test_dropped_and_duplicate_rows_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [
        *_rows(2, 4),
        ("   ", "label_0"),  # empty text
        ("no label here", ""),  # missing label
        ("ticket 0 about topic 0", "label_0"),  # exact duplicate
        ("ticket 0 about topic 0", "label_0"),  # exact duplicate
        ("ticket 1 about topic 1", "label_0"),  # conflicting duplicate (also label_1)
    ]
    data = load_tickets(_csv(tmp_path / "t.csv", rows))
    report = data.report
    assert report["rows_read"] == 13
    assert report["dropped_empty_text"] == 1
    assert report["dropped_missing_label"] == 1
    assert report["dropped_exact_duplicates"] == 2
    assert report["conflicting_duplicate_texts"] == 1
    assert report["conflicting_duplicate_examples"] == [
        {"text": "ticket 1 about topic 1", "labels": ["label_0", "label_1"]}
    ]
    assert report["rows_kept"] == len(data) == 9
    assert report["support"] == {"label_0": 5, "label_1": 4}
    assert "exact duplicates" in caplog.text and "different labels" in caplog.text

    dropped = load_tickets(tmp_path / "t.csv", drop_conflicts=True)
    assert "ticket 1 about topic 1" not in dropped.texts
    assert dropped.report["conflicting_duplicates_dropped_rows"] == 2


def test_split_is_stratified_disjoint_and_reproducible(tmp_path: Path) -> None:
    data = load_tickets(_csv(tmp_path / "t.csv", _rows(4, 20)))
    splits = split_dataset(data, seed=3)
    sizes = [len(s) for s in splits]
    assert sizes == [64, 8, 8]
    for part in splits:
        assert set(Counter(part.labels).values()) == {len(part) // 4}  # perfectly stratified here
    all_texts = [t for part in splits for t in part.texts]
    assert sorted(all_texts) == sorted(data.texts)
    assert split_dataset(data, seed=3).test.texts == splits.test.texts
    assert split_dataset(data, seed=4).test.texts != splits.test.texts
    assert splits.info["support"]["label_0"] == {"train": 16, "validation": 2, "test": 2}


def test_splits_written_and_reused_only_for_same_source_and_seed(tmp_path: Path) -> None:
    data = load_tickets(_csv(tmp_path / "t.csv", _rows(3, 20)))
    out = tmp_path / "splits"
    first = load_or_create_splits(data, out, seed=1)
    assert {p.name for p in out.iterdir()} == {"train.csv", "validation.csv", "test.csv", "split_info.json"}
    stamp = (out / "test.csv").stat().st_mtime_ns
    again = load_or_create_splits(data, out, seed=1)
    assert (out / "test.csv").stat().st_mtime_ns == stamp  # re-used, not rewritten
    assert again.test.texts == first.test.texts and again.train.labels == first.train.labels
    other = load_or_create_splits(data, out, seed=2)
    assert other.test.texts != first.test.texts
    assert json.loads((out / "split_info.json").read_text())["seed"] == 2


def test_too_small_for_three_way_split_is_a_clear_error(tmp_path: Path) -> None:
    data = load_tickets(_csv(tmp_path / "t.csv", _rows(10, 2)))
    with pytest.raises(DataError, match="cannot split"):
        split_dataset(data)


def test_default_dataset_loads() -> None:
    data = load_tickets(DEFAULT_DATA)
    assert len(data.label_names) == 77
    assert data.report["rows_read"] == 10003
    assert min(data.support().values()) >= 30


def test_duplicates_of_the_model_input_are_dropped_and_reported(tmp_path: Path) -> None:
    """Templated e-mails that differ only in what preprocessing strips (greeting, signature, a
    masked number) are one model input: one copy is kept, so train and test cannot share it."""
    from functools import partial

    from triage_core.preprocessing import PreprocessConfig, preprocess

    rows = [
        ("Hi,\n\nMy card 4111 1111 1111 1111 was declined.\n\nThanks,\nAnna", "declined"),
        ("Hello team,\nMy card 5500-0000-0000-0004 was declined.\n\nBest regards,\nTom Smith", "declined"),
        ("My card 4000 0000 0000 0002 was declined.", "declined"),
        ("My card 4000 0000 0000 0002 was declined.", "blocked"),  # same input, other label: kept
        ("Why was my card declined?", "declined"),
        ("Where is my refund?", "refund"),
        ("Dear Sir or Madam,\nWhere is my refund?\nSent from my iPhone", "refund"),
        ("Where is my refund for the shoes?", "refund"),
    ]
    data = load_tickets(_csv_rows(tmp_path / "t.csv", rows), min_examples=1)
    assert data.report["dropped_exact_duplicates"] == 0  # the raw texts all differ
    deduped = dedupe_model_inputs(data, partial(preprocess, config=PreprocessConfig()))
    report = deduped.report
    assert report["dropped_model_input_duplicates"] == 3
    assert deduped.texts == [rows[0][0], rows[3][0], rows[4][0], rows[5][0], rows[7][0]]
    assert report["model_input_duplicate_examples"][0]["model_input"] == "My card [CARD] was declined."
    assert report["conflicting_model_inputs"] == 1
    assert report["conflicting_model_input_examples"] == [
        {"model_input": "My card [CARD] was declined.", "labels": ["blocked", "declined"]}
    ]
    assert report["rows_kept"] == 5 and report["support"] == {"blocked": 1, "declined": 2, "refund": 2}


def _csv_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        writer.writerows(rows)
    return path


SUBJECT_BODY = [
    ("Card not arrived", "Hi,\nI ordered it two weeks ago.", "card_arrival"),
    ("", "My top up failed twice", "top_up_failed"),
    ("Refund missing  ", "", "refund_not_showing_up"),
    ("Card not arrived again", "  still waiting ", "card_arrival"),
    ("Top up", "failed with an error", "top_up_failed"),
    ("refund?", "where is my refund", "refund_not_showing_up"),
]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_subject_and_body_make_the_text_the_server_reads(tmp_path: Path, suffix: str) -> None:
    """``--text-column subject,body`` gives training the very text the server's reader makes of
    the same file with ``TRIAGE_TEXT_FIELDS=subject,body`` (triage_core.reader, id + fields)."""
    import csv as csv_module
    import io

    from triage_core.reader import TicketReader
    from triage_core.records import FieldMap

    path = tmp_path / f"tickets{suffix}"
    if suffix == ".csv":
        out = io.StringIO()
        writer = csv_module.writer(out)
        writer.writerow(["id", "subject", "body", "queue"])
        writer.writerows([i, s, b, q] for i, (s, b, q) in enumerate(SUBJECT_BODY))
        path.write_text(out.getvalue(), encoding="utf-8")
    else:
        path.write_text(
            "".join(
                json.dumps({"id": i, "subject": s, "body": b, "queue": q}) + "\n"
                for i, (s, b, q) in enumerate(SUBJECT_BODY)
            ),
            encoding="utf-8",
        )
    data = load_tickets(path, "subject,body", "queue", min_examples=1)
    served = [
        r.text
        for r in TicketReader([path.read_bytes()], key=path.name, fields=FieldMap("id", ("subject", "body")))
    ]
    assert data.texts == served
    assert data.texts[0] == "Card not arrived\n\nHi,\nI ordered it two weeks ago."
    assert data.texts[1] == "My top up failed twice" and data.texts[2] == "Refund missing"


def test_subject_and_body_splits_are_written_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [
        {"subject": f"s{k} {i}", "body": f"body {i} of {k}", "queue": f"q{k}"}
        for k in range(3)
        for i in range(10)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = load_tickets(path, "subject,body", "queue")
    first = load_or_create_splits(data, tmp_path / "splits", 0.2, 0.2, seed=1)
    assert (tmp_path / "splits" / "train.csv").read_text("utf-8").startswith("text,queue")
    again = load_or_create_splits(data, tmp_path / "splits", 0.2, 0.2, seed=1)
    assert again.test.texts == first.test.texts and "\n\n" in again.test.texts[0]


def test_a_missing_subject_or_body_column_is_named(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv", _rows(), header="subject,category")
    with pytest.raises(DataError, match=r"missing column\(s\) \['body'\]"):
        load_tickets(path, "subject,body")
    with pytest.raises(DataError, match="invalid text column"):
        load_tickets(path, "subject,,body")


@pytest.mark.parametrize("big", [40, 400])
def test_a_label_too_rare_to_split_is_named_with_where_it_went(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, big: int
) -> None:
    """Issue #20: "a label with two rows silently lands entirely in train" (here scikit-learn
    refused the whole split). Now its rows go to train, nothing is lost, and the warning names
    the label, its rows and where they went."""
    rare_rows = 2
    rows = _rows(4, big) + [(f"a rare request number {i}", "rare_queue") for i in range(rare_rows)]
    data = load_tickets(_csv(tmp_path / "t.csv", rows))
    with caplog.at_level("WARNING", logger="training.data"):
        splits = split_dataset(data, seed=0)
    (rare,) = splits.info["rare_labels"]
    assert rare["label"] == "rare_queue" and rare["rows"] == rare_rows
    assert sum(rare["splits"].values()) == rare_rows  # nothing lost
    assert rare["splits"] == splits.info["support"]["rare_queue"]
    assert rare["splits"] == {"train": 2, "validation": 0, "test": 0}
    assert rare["missing_from"] == ["validation", "test"]
    assert sorted(t for part in splits for t in part.texts) == sorted(data.texts)
    warning = next(r.getMessage() for r in caplog.records if "rare_queue" in r.getMessage())
    assert f"has {rare_rows} row(s), too few to split" in warning
    assert f"{rare['splits']['train']} in train" in warning


def test_three_rows_are_enough_for_one_in_each_split(tmp_path: Path) -> None:
    rows = _rows(4, 40) + [(f"a rare request number {i}", "rare_queue") for i in range(3)]
    splits = split_dataset(load_tickets(_csv(tmp_path / "t.csv", rows)), seed=3)
    assert splits.info["rare_labels"] == []
    assert splits.info["support"]["rare_queue"] == {"train": 1, "validation": 1, "test": 1}
