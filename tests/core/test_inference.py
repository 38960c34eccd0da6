"""triage_core.artifact + triage_core.inference on the real tiny artifact (real ONNX Runtime)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.export import fp32_onnx_path
from triage_core.artifact import (
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    ArtifactError,
    ArtifactManifest,
    load_manifest,
    write_manifest,
)
from triage_core.inference import ArtifactClassifier, TicketTokenizer, scores_from_logits
from triage_core.longtext import LongText

ONE_MB_TICKET = "Hello, my card payment was declined at the shop and I do not know why. " * 14_600


@pytest.fixture(scope="module")
def classifier(tiny_artifact: Path) -> ArtifactClassifier:
    return ArtifactClassifier(tiny_artifact, intra_op_threads=1)


def artifact_copy(src: Path, dst: Path, **manifest_changes: object) -> Path:
    """A copy of ``src`` whose manifest JSON has ``manifest_changes`` applied (unvalidated)."""
    shutil.copytree(src, dst)
    data = json.loads((dst / MANIFEST_FILE).read_text("utf-8"))
    data.update(manifest_changes)
    (dst / MANIFEST_FILE).write_text(json.dumps(data), "utf-8")
    return dst


# --- manifest ----------------------------------------------------------------------------------
def test_manifest_roundtrip(tiny_artifact: Path, tmp_path: Path) -> None:
    manifest = load_manifest(tiny_artifact)
    write_manifest(tmp_path, manifest)
    assert ArtifactManifest.model_validate_json((tmp_path / MANIFEST_FILE).read_text("utf-8")) == manifest


@pytest.mark.parametrize("missing", [MODEL_FILE, TOKENIZER_FILE, MANIFEST_FILE])
def test_missing_file_is_named(tiny_artifact: Path, tmp_path: Path, missing: str) -> None:
    copy = artifact_copy(tiny_artifact, tmp_path / "model")
    (copy / missing).unlink()
    with pytest.raises(ArtifactError, match=f"missing {missing}"):
        load_manifest(copy)
    with pytest.raises(ArtifactError):
        ArtifactClassifier(copy)


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="is not a model artifact"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": ["a", "b", "a", "c", "d"]}, "labels must be unique"),
        ({"labels": ["only"]}, "labels"),
        ({"scoring": "argmax"}, "scoring"),
        ({"max_length": 4}, "max_length"),
        ({"max_length": 4096}, "max_length"),
        ({"format_version": 2}, "format_version"),
        ({"quantization": "int4"}, "quantization"),
        ({"surprise": True}, "surprise"),
        ({"preprocessing": {"emojis": "shout"}}, "emojis"),
    ],
)
def test_invalid_manifest_is_rejected(
    tiny_artifact: Path, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    copy = artifact_copy(tiny_artifact, tmp_path / "model", **changes)
    with pytest.raises(ArtifactError, match=message):
        load_manifest(copy)


def test_manifest_that_is_not_json(tiny_artifact: Path, tmp_path: Path) -> None:
    copy = artifact_copy(tiny_artifact, tmp_path / "model")
    (copy / MANIFEST_FILE).write_text("{labels: oops", "utf-8")
    with pytest.raises(ArtifactError, match=r"invalid triage_artifact\.json"):
        load_manifest(copy)


def test_model_and_manifest_must_agree(tiny_artifact: Path, tmp_path: Path) -> None:
    """Disagreements surface when the artifact is loaded (server start), not on a request."""
    wrong_inputs = artifact_copy(
        tiny_artifact, tmp_path / "inputs", onnx_inputs=["input_ids", "attention_mask"]
    )
    with pytest.raises(ArtifactError, match=r"model\.onnx takes inputs"):
        ArtifactClassifier(wrong_inputs)
    labels = [*load_manifest(tiny_artifact).labels, "one_more"]
    wrong_labels = artifact_copy(tiny_artifact, tmp_path / "labels", labels=labels)
    with pytest.raises(ArtifactError, match="outputs 5 logits, the manifest has 6 labels"):
        ArtifactClassifier(wrong_labels)
    corrupt = artifact_copy(tiny_artifact, tmp_path / "corrupt")
    (corrupt / MODEL_FILE).write_bytes(b"not an onnx model")
    with pytest.raises(ArtifactError, match="cannot be loaded by ONNX Runtime"):
        ArtifactClassifier(corrupt)


# --- tokenizer: truncation and padding ---------------------------------------------------------
def test_one_megabyte_ticket_is_truncated_to_max_length(classifier: ArtifactClassifier) -> None:
    assert len(ONE_MB_TICKET) > 1_000_000
    (cleaned,) = classifier.clean([ONE_MB_TICKET])
    assert len(cleaned) <= classifier.manifest.preprocessing.max_chars
    (encoding,) = classifier.tokenizer.encode([cleaned])
    assert len(encoding.ids) == classifier.manifest.max_length
    # Head truncation: the ticket's first words survive, [SEP] still closes the sequence.
    tokens = [
        classifier.tokenizer.tokenizer.id_to_token(i) for i in encoding.ids
    ]  # the fast encoding keeps ids only
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens[1:4] == ["my", "card", "payment"]  # "Hello," is a greeting and is stripped
    scores = classifier.predict_scores([ONE_MB_TICKET, "where is my card?"])
    assert scores.shape == (2, len(classifier.labels))
    assert np.isfinite(scores).all()


def test_pad_to_longest_in_batch(tiny_artifact: Path) -> None:
    tokenizer = TicketTokenizer(
        tiny_artifact / TOKENIZER_FILE, 32, ["input_ids", "attention_mask", "token_type_ids"]
    )
    encodings = tokenizer.encode(["hi", "my card has not arrived yet and it has been two weeks"])
    lengths = [len(e.ids) for e in encodings]
    feed = tokenizer.pad(encodings)
    assert list(feed) == ["input_ids", "attention_mask", "token_type_ids"]
    assert feed["input_ids"].shape == (2, max(lengths))
    assert all(a.dtype == np.int64 for a in feed.values())
    np.testing.assert_array_equal(feed["attention_mask"].sum(axis=1), lengths)
    assert (feed["input_ids"][0, lengths[0] :] == tokenizer.pad_id).all()
    assert tokenizer.pad_id == 0  # [PAD] in the BERT vocabulary
    assert not feed["token_type_ids"].any()


def test_feed_has_only_the_models_inputs(tiny_artifact: Path) -> None:
    tokenizer = TicketTokenizer(tiny_artifact / TOKENIZER_FILE, 16, ["input_ids", "attention_mask"])
    feed = tokenizer.pad(tokenizer.encode(["one", "two words"]))
    assert list(feed) == ["input_ids", "attention_mask"]


# --- classifier ----------------------------------------------------------------------------------
ORDER_TEXTS = [
    "the exchange rate I got was wrong " * 4,
    "top up failed",
    "card?",
    "I lost my card yesterday, please block it",
    "refund not showing",
]


def test_scores_are_in_input_order_whatever_the_batching(tiny_artifact: Path, tmp_path: Path) -> None:
    """fp32 model: length-sorted, padded batches give the same scores as one ticket at a time."""
    copy = artifact_copy(tiny_artifact, tmp_path / "model", quantization="none")
    shutil.copyfile(fp32_onnx_path(tiny_artifact), copy / MODEL_FILE)
    fp32 = ArtifactClassifier(copy)
    one_by_one = np.vstack([fp32.predict_scores([t]) for t in ORDER_TEXTS])
    for batch_size in (2, 3, 32):
        np.testing.assert_allclose(fp32.predict_scores(ORDER_TEXTS, batch_size), one_by_one, atol=1e-5)


def test_a_second_session_without_spinning_scores_the_same(classifier: ArtifactClassifier) -> None:
    texts = ["my card has not arrived", "top up failed twice", "why was I charged a fee?"]
    encodings = classifier.tokenizer.encode(classifier.clean(texts))
    quiet = classifier.runner(2, allow_spinning=False)
    np.testing.assert_allclose(quiet(encodings), classifier.run(encodings), atol=1e-5)


def test_int8_batching_keeps_order(classifier: ArtifactClassifier) -> None:
    """int8: activations are quantized per batch (dynamic quantization), so the neighbours in a
    batch move scores slightly; each row must still be closest to its own single-ticket scores."""
    one_by_one = np.vstack([classifier.predict_scores([t]) for t in ORDER_TEXTS])
    batched = classifier.predict_scores(ORDER_TEXTS, batch_size=32)
    distances = np.abs(batched[:, None, :] - one_by_one[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(distances.argmin(axis=1), np.arange(len(ORDER_TEXTS)))
    assert np.abs(batched - one_by_one).max() < 0.05


def test_empty_input(classifier: ArtifactClassifier) -> None:
    assert classifier.predict_scores([]).shape == (0, len(classifier.labels))


def test_empty_and_odd_texts_do_not_crash(classifier: ArtifactClassifier) -> None:
    scores = classifier.predict_scores(["", "   ", "\x00\x01", "😀😀😀", "[CLS] [SEP] [PAD]", "ß" * 50])
    assert scores.shape == (6, len(classifier.labels))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def test_manifest_preprocessing_is_applied(classifier: ArtifactClassifier) -> None:
    email = "Hi team,\n\nwhere is my new card?\n\nKind regards,\nAnna Smith\n+44 20 7946 0958"
    assert classifier.clean([email]) == ["where is my new card?"]
    np.testing.assert_allclose(
        classifier.predict_scores([email]), classifier.predict_scores(["where is my new card?"]), atol=1e-6
    )


def test_sigmoid_scoring(tiny_artifact: Path, tmp_path: Path) -> None:
    copy = artifact_copy(tiny_artifact, tmp_path / "model", scoring="sigmoid")
    sigmoid = ArtifactClassifier(copy).predict_scores(["where is my card", "refund please"])
    softmax = ArtifactClassifier(tiny_artifact).predict_scores(["where is my card", "refund please"])
    assert ((sigmoid > 0) & (sigmoid < 1)).all()
    assert not np.allclose(sigmoid.sum(axis=1), 1.0)
    np.testing.assert_array_equal(sigmoid.argmax(axis=1), softmax.argmax(axis=1))  # both monotone


def test_scores_from_logits_is_stable() -> None:
    logits = np.array([[1000.0, -1000.0, 0.0], [0.0, 0.0, 0.0]])
    soft = scores_from_logits(logits, "softmax")
    assert np.isfinite(soft).all()
    np.testing.assert_allclose(soft[0], [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(soft[1], [1 / 3] * 3, atol=1e-6)
    np.testing.assert_allclose(scores_from_logits(np.zeros((1, 2)), "sigmoid"), [[0.5, 0.5]])


def test_top_k(classifier: ArtifactClassifier) -> None:
    scores = classifier.predict_scores(["where is my card", "refund please"])
    preds = classifier.top_k(scores, k=3)
    for pred, row in zip(preds, scores, strict=True):
        assert pred.label == classifier.labels[int(row.argmax())]
        assert pred.score == pytest.approx(float(row.max()))
        assert len(pred.top_k) == 3
        assert [s for _, s in pred.top_k] == sorted((s for _, s in pred.top_k), reverse=True)
    assert len(classifier.top_k(scores, k=100)[0].top_k) == len(classifier.labels)
    assert len(classifier.top_k(scores, k=0)[0].top_k) == 1


def test_one_megabyte_unbroken_blob_is_fast(tiny_artifact: Path) -> None:
    """A pasted base64 attachment: 1 MB without a space. Regression: the e-mail regex used to
    backtrack quadratically on it (20 kB: 3 s, 1 MB: hours), stalling a server worker."""
    code = (
        "from triage_core.inference import ArtifactClassifier; import sys;"
        f"c = ArtifactClassifier({str(tiny_artifact)!r});"
        "print(c.predict_scores(['QUJD' * 250_000]).shape)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=10, check=True
    )
    assert done.stdout.strip() == f"(1, {len(load_manifest(tiny_artifact).labels)})"


TOKENIZER_TEXT = st.lists(
    st.text(st.characters(codec="utf-8"), max_size=30)
    | st.sampled_from(["card", " ", "\n", "café", "🙂", "top-up", "'", "£50", "TOP UP", "\u00a0"]),
    max_size=40,
).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TOKENIZER_TEXT, min_size=1, max_size=6), max_length=st.sampled_from([8, 32, 512]))
def test_the_fast_encoding_is_the_tokenizer_s_own(
    tiny_artifact: Path, texts: list[str], max_length: int
) -> None:
    """``TicketTokenizer.encode`` uses the tokenizers library's ``encode_batch_fast`` (its
    docstring: ``encode_batch`` without offsets) and, for ASCII texts, the compiled WordPiece
    (tests/core/test_wordpiece.py); the ids and type ids the model reads are ``encode_batch``'s,
    with truncation (``head``) and without (``windows``)."""
    from tokenizers import Tokenizer

    for strategy in (LongText(), LongText(strategy="windows")):
        ours = TicketTokenizer(tiny_artifact / TOKENIZER_FILE, max_length, ["input_ids"], strategy)
        theirs = Tokenizer.from_file(str(tiny_artifact / TOKENIZER_FILE))
        theirs.no_padding()
        if strategy.strategy == "head":
            theirs.enable_truncation(max_length=max_length)
        else:
            theirs.no_truncation()
        expected = theirs.encode_batch(texts)
        got = ours.encode(texts)
        for text, enc, exp in zip(texts, got, expected, strict=True):
            if len(exp.ids) <= max_length or strategy.strategy == "head":
                assert (list(enc.ids), list(enc.type_ids)) == (exp.ids, exp.type_ids), text


def test_the_fast_encoding_on_every_banking77_ticket(tiny_artifact: Path) -> None:
    from tokenizers import Tokenizer

    with (Path(__file__).resolve().parents[2] / "data" / "banking77" / "train.csv").open(
        encoding="utf-8"
    ) as fh:
        texts = [row["text"] for row in csv.DictReader(fh)]
    ours = TicketTokenizer(tiny_artifact / TOKENIZER_FILE, 64, ["input_ids"])
    theirs = Tokenizer.from_file(str(tiny_artifact / TOKENIZER_FILE))
    theirs.no_padding()
    theirs.enable_truncation(max_length=64)
    got = [(list(e.ids), list(e.type_ids)) for e in ours.encode(texts)]
    assert got == [(e.ids, e.type_ids) for e in theirs.encode_batch(texts)]
