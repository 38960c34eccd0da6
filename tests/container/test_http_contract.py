"""The /ping and /invocations contract, over HTTP against the real server process."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from triage_core.artifact import MODEL_FILE
from triage_core.inference import ArtifactClassifier

ROOT = Path(__file__).resolve().parents[2]

NOISY = [
    "Hi team,\n\nmy card hasn't arrived yet 😡 can you check?\n\nThanks,\nAnna\n-- \nSent from my iPhone",
    "I was charged twice at https://shop.example.com, card 4111 1111 1111 1111, call me on +44 20 7946 0958",
    "Pourquoi mon virement n'est-il pas encore arrivé ? ¿Dónde está mi dinero?",
    "TOP UP FAILED!!!",
    "> old quoted reply\nwhy was my transfer declined",
]


def banking_texts(n: int) -> list[str]:
    with (ROOT / "data/banking77/train.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    step = max(1, len(rows) // n)
    return [row["text"] for row in rows[::step][:n]]


def test_ping_is_200_once_ready(server):
    resp = server.request("GET", "/ping")
    assert resp.status == 200
    assert resp.json() == {"status": "ok"}


def test_inputs_answered_as_json_lines_get_this_projects_records(server, tiny_labels):
    """``inputs`` with ``Accept: application/json`` is the Hugging Face toolkit's shape
    (test_hf_toolkit.py); asked for JSON Lines, it gets this project's records."""
    body = {"inputs": ["card lost", "exchange rate for euros", "top up failed"], "parameters": {"top_k": 3}}
    resp = server.invoke(json.dumps(body).encode(), "application/json", "application/jsonlines")
    preds = resp.jsonl()
    assert [p["index"] for p in preds] == [0, 1, 2]
    for pred in preds:
        assert pred["id"] is None and pred["label"] in tiny_labels
        assert pred["needs_review"] == (pred["score"] < 0.5)
        top = pred["top_k"]
        assert len(top) == 3
        assert top[0] == {"label": pred["label"], "score": pred["score"]}
        assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)


def test_top_k_larger_than_label_count_is_clamped(server, tiny_labels):
    body = {"instances": [{"text": "card lost"}], "parameters": {"top_k": 1000}}
    (pred,) = server.invoke(json.dumps(body).encode(), "application/json").json()["predictions"]
    assert len(pred["top_k"]) == len(tiny_labels)


def test_instances_echo_ids_in_order(server):
    instances = [{"id": f"t-{i}", "text": text} for i, text in enumerate(banking_texts(10))]
    resp = server.invoke(json.dumps({"instances": instances}).encode(), "application/json")
    preds = resp.json()["predictions"]
    assert [p["id"] for p in preds] == [f"t-{i}" for i in range(10)]
    assert [p["index"] for p in preds] == list(range(10))


def test_jsonlines_in_and_out(server):
    lines = [json.dumps({"id": i, "text": t}) for i, t in enumerate(banking_texts(5))]
    resp = server.invoke("\n".join(lines).encode(), "application/jsonlines", "application/jsonlines")
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/jsonlines"
    preds = resp.jsonl()
    assert [p["id"] for p in preds] == ["0", "1", "2", "3", "4"]  # integer ids come back as strings


def test_csv_with_id_and_quoted_multiline_text(server):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "text", "channel"])
    writer.writerow(["a1", "my card, it never came", "email"])
    writer.writerow(["a2", "line one\nline two, with a comma", "chat"])
    resp = server.invoke(buf.getvalue().encode(), "text/csv", "application/jsonlines")
    preds = resp.jsonl()
    assert [(p["id"], p["index"]) for p in preds] == [("a1", 0), ("a2", 1)]
    assert all("label" in p for p in preds)


def test_csv_without_id_column(server):
    resp = server.invoke(b"text\nhello, is my card lost?\ntop up\n", "text/csv")
    preds = resp.json()["predictions"]
    assert [p["id"] for p in preds] == [None, None]


def test_content_type_parameters_and_accept_negotiation(server):
    body = b'{"inputs": "card"}'
    assert server.invoke(body, "application/json; charset=utf-8").status == 200
    assert server.invoke(body, "application/json", "*/*").headers["content-type"] == "application/json"
    resp = server.invoke(body, "application/json", "text/html;q=0.9, application/jsonlines")
    assert resp.headers["content-type"] == "application/jsonlines"
    resp = server.invoke(body, "application/json", "application/jsonlines;q=0.5, application/json")
    assert resp.headers["content-type"] == "application/json"


def test_top_k_from_sagemaker_custom_attributes(server):
    resp = server.invoke(
        b'{"id": "x", "text": "lost card"}\n',
        "application/jsonlines",
        "application/jsonlines",
        **{"X-Amzn-SageMaker-Custom-Attributes": "trace=abc,top_k=2"},
    )
    (pred,) = resp.jsonl()
    assert len(pred["top_k"]) == 2


@pytest.fixture(scope="module")
def fp32_server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory):
    """The server on the tiny artifact with its fp32 ONNX model: scores that do not depend on
    which tickets share a batch (int8 dynamic quantization scales activations per batch)."""
    from tests.container.conftest import SERVER_LIMITS
    from tests.container.serverproc import start_server, stop_server
    from training.export import fp32_onnx_path

    artifact = tmp_path_factory.mktemp("fp32") / "model"
    shutil.copytree(tiny_artifact, artifact)
    shutil.copyfile(fp32_onnx_path(tiny_artifact), artifact / MODEL_FILE)
    srv = start_server(artifact, artifact.parent / "server.log", **SERVER_LIMITS)
    yield srv, artifact
    stop_server(srv)


def served(server, texts: list[str]) -> list[dict]:
    lines = [json.dumps({"id": f"r{i}", "text": t}) for i, t in enumerate(texts)]
    resp = server.invoke("\n".join(lines).encode(), "application/jsonlines", "application/jsonlines")
    preds = resp.jsonl()
    assert [p["id"] for p in preds] == [f"r{i}" for i in range(len(texts))]
    return preds


def test_served_predictions_equal_the_evaluation_code_path(fp32_server):
    """No training/serving skew: HTTP predictions == ArtifactClassifier (what evaluation runs),
    score for score, on a model whose scores do not depend on the batch (fp32): whatever batches
    the server's pool forms under whatever load, preprocessing, tokenizing, padding and scoring
    must give the evaluation's numbers."""
    server, artifact = fp32_server
    texts = banking_texts(150) + NOISY
    preds = served(server, texts)
    classifier = ArtifactClassifier(artifact)
    expected = classifier.top_k(classifier.predict_scores(texts), 1)
    np.testing.assert_allclose([p["score"] for p in preds], [e.score for e in expected], atol=1e-5)
    assert [p["label"] for p in preds] == [e.label for e in expected]


def test_served_int8_labels_agree_with_the_evaluation(server, tiny_artifact):
    """The shipped int8 model through HTTP and through ArtifactClassifier: a ticket's score can
    move a little with its batch-mates (dynamic quantization scales activations per batch, and
    the server's batches depend on load), so the labels must agree on almost every ticket (the
    tiny random model has many near-ties; the real one: docs/benchmarks.md)."""
    texts = banking_texts(150) + NOISY
    preds = served(server, texts)
    classifier = ArtifactClassifier(tiny_artifact)
    expected = classifier.top_k(classifier.predict_scores(texts), 1)
    same = sum(p["label"] == e.label for p, e in zip(preds, expected, strict=True))
    assert same >= 0.95 * len(texts)


@pytest.mark.parametrize("path,method,status", [("/nope", "GET", 404), ("/invocations", "GET", 405)])
def test_unknown_routes(server, path, method, status):
    resp = server.request(method, path)
    assert resp.status == status
    assert "error" in resp.json()
