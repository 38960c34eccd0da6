"""``make compare-models`` (training/compare.py) on two real artifacts: linear models fitted on
Banking77 tickets, one on few tickets (the "running" model), one on many (the "candidate").

Every number of the report is checked against an independent computation: scikit-learn's own
``predict_proba`` of the fitted pipelines (not triage_core's numpy scorer the artifacts run) and
``sklearn.metrics.f1_score``.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from training.baseline import BaselineConfig, fit_baseline, save_linear
from training.compare import GATE_FAILED, INPUT_ERROR, PASSED, main
from training.export import pack_model_tar
from triage_core.artifact import ArtifactManifest, write_manifest
from triage_core.linear import LINEAR_FILE, LinearSpec
from triage_core.preprocessing import PreprocessConfig, preprocess_batch

ROOT = Path(__file__).resolve().parents[2]
THRESHOLDS = {"running": 0.45, "candidate": 0.35}


@pytest.fixture(scope="module")
def tickets() -> dict[str, list[dict[str, str]]]:
    with (ROOT / "data" / "banking77" / "train.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    keep = sorted({r["category"] for r in rows})[:6]
    rows = [r for r in rows if r["category"] in keep]
    random.Random(11).shuffle(rows)
    return {"small": rows[:48], "large": rows[48:408], "golden": rows[408:528]}


def build(rows: list[dict[str, str]], directory: Path, threshold: float):
    labels = sorted({r["category"] for r in rows})
    cleaned = preprocess_batch([r["text"] for r in rows], PreprocessConfig())
    model = fit_baseline(cleaned, [r["category"] for r in rows], labels, BaselineConfig(min_df=1))
    directory.mkdir(parents=True)
    save_linear(model, directory / LINEAR_FILE, labels)
    write_manifest(
        directory,
        ArtifactManifest(
            labels=labels, model="linear", linear=LinearSpec(weight=1.0), review_threshold=threshold
        ),
    )
    return model


@pytest.fixture(scope="module")
def artifacts(tickets, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    root = tmp_path_factory.mktemp("compare")
    return {
        name: (root / name, build(tickets[rows], root / name, THRESHOLDS[name]))
        for name, rows in (("running", "small"), ("candidate", "large"))
    }


@pytest.fixture(scope="module")
def golden(tickets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The held-out tickets with ids and labels, one without text (the reader rejects it) and one
    without a label (scored, left out of F1)."""
    path = tmp_path_factory.mktemp("golden") / "golden.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ticket_id", "text", "category"])
        for i, row in enumerate(tickets["golden"]):
            writer.writerow([f"g-{i}", row["text"], row["category"]])
        writer.writerow(["g-empty", "", "card_arrival"])
        writer.writerow(["g-unlabeled", "Where is my new card? It has been two weeks.", ""])
    return path


def both(artifacts) -> list[str]:
    return ["--running", str(artifacts["running"][0]), "--candidate", str(artifacts["candidate"][0])]


def run(capsys, *args: str) -> tuple[int, str, dict]:
    code = main(list(args))
    out = capsys.readouterr().out
    return code, out, json.loads(out.strip().splitlines()[-1])


def expected(tickets, artifacts) -> dict:
    """The report computed independently: scikit-learn's pipelines on the same cleaned texts."""
    texts = [r["text"] for r in tickets["golden"]] + ["Where is my new card? It has been two weeks."]
    truth = [r["category"] for r in tickets["golden"]]
    cleaned = preprocess_batch(texts, PreprocessConfig())
    out = {}
    for name, (_, model) in artifacts.items():
        proba = model.predict_proba(cleaned)
        out[name] = {
            "labels": [model.classes_[i] for i in proba.argmax(axis=1)],
            "review": float((proba.max(axis=1) < THRESHOLDS[name]).mean()),
        }
    categories = sorted(set(truth) | set(out["running"]["labels"]) | set(out["candidate"]["labels"]))
    for name in out:
        predicted = out[name]["labels"][: len(truth)]
        out[name]["f1"] = dict(
            zip(
                categories,
                f1_score(truth, predicted, labels=categories, average=None, zero_division=0),
                strict=True,
            )
        )
        out[name]["accuracy"] = float(np.mean([t == p for t, p in zip(truth, predicted, strict=True)]))
    pairs = list(zip(out["running"]["labels"], out["candidate"]["labels"], strict=True))
    out["agreement"] = sum(r == c for r, c in pairs) / len(pairs)
    out["flips"] = Counter((r, c) for r, c in pairs if r != c)
    return out


def test_the_report_matches_an_independent_computation(capsys, tickets, artifacts, golden) -> None:
    code, out, report = run(
        capsys,
        *("--golden", str(golden), "--id-column", "ticket_id"),
        *("--running", str(artifacts["running"][0]), "--candidate", str(artifacts["candidate"][0])),
    )
    want = expected(tickets, artifacts)
    assert code == PASSED
    assert (report["tickets"], report["scored"], report["rejected"]) == (122, 121, 1)
    assert report["rejected_records"][0]["id"] == "g-empty"  # accounted for, with the reader's reason
    assert report["labeled"] == 120
    assert 0.3 < want["agreement"] < 1.0  # the two models really differ
    assert report["agreement"] == pytest.approx(want["agreement"])
    assert report["changed"] == sum(want["flips"].values())
    for name in ("running", "candidate"):
        assert report["review_share"][name] == pytest.approx(want[name]["review"])
        assert report["review_threshold"][name] == {"value": THRESHOLDS[name], "from": "artifact"}
        assert report["accuracy"][name] == pytest.approx(want[name]["accuracy"])
        counts = Counter(want[name]["labels"])
        for row in report["per_category"]:
            assert row[name] == counts.get(row["category"], 0)
            assert row[f"f1_{name}"] == pytest.approx(want[name]["f1"][row["category"]])
    top = report["flips"][0]
    assert top["tickets"] == max(want["flips"].values())
    assert want["flips"][(top["from"], top["to"])] == top["tickets"]
    assert f"agreement: {report['agreement']:.4f}" in out
    assert "most frequent changes (running -> candidate):" in out


def test_gates_from_the_command_line_set_the_exit_status(capsys, artifacts, golden) -> None:
    base = ["--golden", str(golden), "--running", str(artifacts["running"][0])]
    base += ["--candidate", str(artifacts["candidate"][0])]
    _, _, report = run(capsys, *base)
    agreement = report["agreement"]
    increase = report["review_share"]["candidate"] - report["review_share"]["running"]
    assert run(capsys, *base, "--min-agreement", str(agreement))[0] == PASSED
    code, out, failed = run(capsys, *base, "--min-agreement", str(agreement + 0.01))
    assert code == GATE_FAILED and "GATE FAILED: agreement" in out and failed["gates_failed"]
    assert run(capsys, *base, "--max-review-increase", str(increase - 0.001))[0] == GATE_FAILED
    assert run(capsys, *base, "--max-review-increase", str(increase + 0.001))[0] == PASSED
    share = report["review_share"]["candidate"]
    assert run(capsys, *base, "--max-review-share", str(share - 0.001))[0] == GATE_FAILED
    drop = report["macro_f1"]["running"] - report["macro_f1"]["candidate"]
    assert run(capsys, *base, "--max-f1-drop", str(drop - 0.001))[0] == GATE_FAILED


def test_the_running_model_may_be_the_model_tar_gz_the_endpoint_serves(
    capsys, artifacts, golden, tmp_path
) -> None:
    archive = pack_model_tar(artifacts["running"][0], tmp_path / "model.tar.gz")
    args = ["--golden", str(golden), "--candidate", str(artifacts["candidate"][0])]
    from_dir = run(capsys, *args, "--running", str(artifacts["running"][0]))[2]
    from_tar = run(capsys, *args, "--running", str(archive))[2]
    for key in ("agreement", "review_share", "per_category", "flips", "macro_f1"):
        assert from_tar[key] == from_dir[key]


def test_an_s3_uri_is_downloaded_from_s3(artifacts, tmp_path) -> None:
    """moto's server stands for S3 (open_artifact takes the client, as the CLI builds it)."""
    from local_pipeline.aws import DUMMY_CREDENTIALS, MotoServer, patched_environ
    from training.compare import open_artifact

    archive = pack_model_tar(artifacts["running"][0], tmp_path / "model.tar.gz")
    with patched_environ(DUMMY_CREDENTIALS):
        server = MotoServer().start()
        try:
            s3 = server.client("s3")
            s3.create_bucket(Bucket="models")
            s3.upload_file(str(archive), "models", "v7/model.tar.gz")
            work = tmp_path / "work"
            work.mkdir()
            directory = open_artifact("s3://models/v7/model.tar.gz", work, s3_client=s3)
        finally:
            server.stop()
    assert (directory / LINEAR_FILE).read_bytes() == (artifacts["running"][0] / LINEAR_FILE).read_bytes()


def test_a_file_without_labels_is_compared_without_f1(capsys, artifacts, tickets, tmp_path) -> None:
    path = tmp_path / "golden.jsonl"
    path.write_text(
        "".join(json.dumps({"id": str(i), "text": r["text"]}) + "\n" for i, r in enumerate(tickets["golden"]))
    )
    code, out, report = run(
        capsys,
        "--golden",
        str(path),
        "--running",
        str(artifacts["running"][0]),
        "--candidate",
        str(artifacts["candidate"][0]),
    )
    assert code == PASSED and report["scored"] == 120
    assert "macro_f1" not in report and "f1_running" not in report["per_category"][0]
    assert "F1 run" not in out


def test_an_unreadable_golden_file_is_a_clear_error_not_a_pass(capsys, artifacts, tmp_path) -> None:
    path = tmp_path / "golden.csv"
    path.write_text("subject,category\nmy card,card_arrival\n")
    code = main(
        [
            "--golden",
            str(path),
            "--candidate",
            str(artifacts["candidate"][0]),
            "--running",
            str(artifacts["running"][0]),
        ]
    )
    assert code == INPUT_ERROR
    assert "expected text column(s) ['text']" in capsys.readouterr().err
    assert main(["--golden", str(path), "--candidate", str(tmp_path / "nowhere")]) == INPUT_ERROR
