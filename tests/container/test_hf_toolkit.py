"""Drop-in for the SageMaker Hugging Face inference toolkit: its request shape, its response shape.

What the toolkit does, read from its code (aws/sagemaker-huggingface-inference-toolkit 2.6.0):
``HuggingFaceHandlerService.predict`` pops ``inputs`` and ``parameters`` from the JSON body and
returns ``pipeline(inputs, **parameters)``; ``decoder_encoder.encode_json`` writes that value as
the JSON response; any exception becomes a 400. So the reference for every response shape is
transformers' ``TextClassificationPipeline`` itself: these tests run the installed one on the
checkpoint the served artifact was exported from (``tiny_hf_model``) with the same request, and
require the server's answer to have exactly its structure. ``return_all_scores`` is gone from
transformers 5 (the installed pipeline ignores it); its meaning is transformers 4.x's
(``_sanitize_parameters`` at huggingface/transformers@01080c6: ``True`` means every label, in
label order, in the legacy shape), which toolkit images with transformers 4 serve.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

TEXTS = ["my card has not arrived yet", "what exchange rate do you use?", "top up failed"]


@pytest.fixture(scope="module")
def hf_pipeline(tiny_hf_model: Path):
    from transformers import pipeline

    return pipeline("text-classification", model=str(tiny_hf_model), tokenizer=str(tiny_hf_model))


def structure(value: Any) -> Any:
    """The shape of a JSON value: nesting, lengths, keys and value types (not the numbers)."""
    if isinstance(value, list):
        return [structure(v) for v in value]
    if isinstance(value, dict):
        return {k: type(v).__name__ for k, v in value.items()}
    return type(value).__name__


def post(server, body: dict, accept: str | None = "application/json"):
    return server.invoke(json.dumps(body).encode(), "application/json", accept)


@pytest.mark.parametrize(
    "inputs, parameters",
    [
        (TEXTS[0], None),
        (TEXTS, None),
        (TEXTS[0], {"top_k": 2}),
        (TEXTS, {"top_k": 2}),
        (TEXTS[0], {"top_k": None}),
        (TEXTS, {"top_k": None}),
        (TEXTS[0], {"top_k": 0}),
        (TEXTS, {"top_k": 1000}),
        (TEXTS, {"function_to_apply": "softmax", "truncation": True}),
    ],
)
def test_response_has_the_pipelines_structure(server, hf_pipeline, tiny_labels, inputs, parameters):
    body = {"inputs": inputs} if parameters is None else {"inputs": inputs, "parameters": parameters}
    resp = post(server, body)
    assert resp.status == 200, resp.body
    assert resp.headers["content-type"] == "application/json"
    served = resp.json()
    expected = hf_pipeline(inputs, **(parameters or {}))
    assert structure(served) == structure(expected)
    rows = served if isinstance(inputs, list) else [served]
    for row in rows:
        ranked = row if isinstance(row, list) else [row]
        assert {r["label"] for r in ranked} <= set(tiny_labels)
        scores = [r["score"] for r in ranked]
        assert scores == sorted(scores, reverse=True)  # best first, as the pipeline sorts


def test_return_all_scores_is_transformers_4s_legacy_shape(server, tiny_labels):
    one = post(server, {"inputs": TEXTS[0], "parameters": {"return_all_scores": True}}).json()
    assert [[r["label"] for r in row] for row in one] == [tiny_labels]  # label order, not sorted
    assert sum(r["score"] for r in one[0]) == pytest.approx(1.0, abs=1e-4)
    many = post(server, {"inputs": TEXTS, "parameters": {"return_all_scores": True}}).json()
    assert [[r["label"] for r in row] for row in many] == [tiny_labels] * len(TEXTS)
    # return_all_scores=false is the default shape; an explicit top_k wins over it (transformers 4)
    default = post(server, {"inputs": TEXTS, "parameters": {"return_all_scores": False}}).json()
    assert structure(default) == structure(post(server, {"inputs": TEXTS}).json())
    both = post(server, {"inputs": TEXTS[0], "parameters": {"return_all_scores": True, "top_k": 2}}).json()
    assert len(both) == 2 and both[0]["score"] >= both[1]["score"]


def test_top_label_matches_the_servers_own_records(server):
    """The two shapes are two encodings of the same scores."""
    toolkit = post(server, {"inputs": TEXTS}).json()
    lines = post(server, {"inputs": TEXTS}, "application/jsonlines").jsonl()
    assert [t["label"] for t in toolkit] == [line["label"] for line in lines]
    assert [t["score"] for t in toolkit] == pytest.approx([line["score"] for line in lines], abs=1e-6)
    assert [line["index"] for line in lines] == [0, 1, 2]  # JSON Lines keeps this project's records


@pytest.mark.parametrize(
    "body, message",
    [
        ({"inputs": "card", "parameters": {"function_to_apply": "none"}}, "scores are softmax scores"),
        ({"inputs": "card", "parameters": {"function_to_apply": "default"}}, "must be 'softmax'"),
        ({"inputs": "card", "parameters": {"top_k": -1}}, "non-negative integer"),
        ({"inputs": "card", "parameters": {"top_k": "2"}}, "non-negative integer"),
        ({"inputs": "card", "parameters": {"return_all_scores": "yes"}}, "true or false"),
        ({"inputs": "card", "parameters": {"max_length": 5}}, "unsupported parameter(s) ['max_length']"),
        ({"inputs": "card", "parameters": {"truncation": False}}, "always truncated"),
        ({"inputs": [{"text": "a", "text_pair": "b"}]}, "text pairs are not supported"),
        ({"inputs": ["card lost", "  ", 7]}, "inputs[1]: empty text; inputs[2]"),
        ({"inputs": []}, "no tickets"),
    ],
)
def test_what_the_server_cannot_honour_is_a_400_never_ignored(server, body, message):
    resp = post(server, body)
    assert resp.status == 400, resp.body
    assert message in resp.json()["error"]
