"""triage_core.longtext: the maximum length from the data, and the long-ticket strategies through
the real tokenizer and real ONNX Runtime (the tiny fp32 artifact)."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from training.export import fp32_onnx_path
from triage_core.artifact import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, load_manifest
from triage_core.inference import ArtifactClassifier, scores_from_logits
from triage_core.longtext import (
    Framing,
    LongText,
    Tokens,
    Windows,
    choose_max_length,
    pool_logits,
    token_lengths,
    window_starts,
)
from triage_core.preprocessing import PreprocessConfig, preprocess_batch

ROOT = Path(__file__).resolve().parents[2]
BANKING77 = ROOT / "data" / "banking77" / "train.csv"
# A complaint of a few hundred tokens whose head and tail say different things.
LONG = (
    "I opened a checking account in March and the branch promised no monthly fees. "
    + "Every statement since then shows a maintenance charge that nobody can explain to me. " * 12
    + "In the end what I need is the mortgage escrow refund for my house, please send it."
)


def test_banking77_resolves_to_the_measured_default_of_64_tokens(minilm_path: Path) -> None:
    """The bundled data, preprocessed as training does, through the default model's tokenizer:
    the data-chosen maximum is today's default (64), so the default model does not change."""
    with BANKING77.open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    lengths = token_lengths(minilm_path / "tokenizer.json", preprocess_batch(texts, PreprocessConfig()))
    assert len(lengths) == 10003 and max(lengths) > 64  # a few are cut (0.3 %)
    assert choose_max_length(lengths, cap=512) == 64


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=300), st.integers(8, 512))
def test_choose_max_length_covers_the_percentile_within_the_cap(lengths: list[int], cap: int) -> None:
    chosen = choose_max_length(lengths, cap=cap)
    assert chosen <= cap
    if chosen < cap:
        assert chosen % 32 == 0
        assert chosen >= np.percentile(lengths, 99)
        assert chosen - 32 < max(32, np.percentile(lengths, 99))  # the smallest multiple that does


def test_choose_max_length_refuses_nothing() -> None:
    with pytest.raises(ValueError, match="no token lengths"):
        choose_max_length([])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5000), st.integers(4, 510), st.sampled_from([0.0, 0.25, 0.5]), st.integers(1, 16))
def test_windows_cover_the_ticket(n: int, size: int, overlap: float, max_windows: int) -> None:
    starts = window_starts(n, size, overlap, max_windows)
    assert starts == sorted(starts) and starts[0] == 0
    assert len(starts) <= max_windows
    assert all(s >= 0 and s + min(size, n) <= n for s in starts)
    if max_windows > 1:
        assert starts[-1] + size >= n  # the last window ends at the ticket's end
    else:
        assert starts == [0]  # one window: the head
    if len(starts) < max_windows or n <= size * max_windows:
        # no gap between windows: every token is in some window
        assert all(b <= a + size for a, b in itertools.pairwise(starts))


def test_pool_logits() -> None:
    logits = np.array([[1.0, 0.0], [3.0, -2.0], [0.0, 5.0], [7.0, 7.0]], dtype=np.float32)
    np.testing.assert_allclose(pool_logits(logits, [1, 2, 1], "mean"), [[1, 0], [1.5, 1.5], [7, 7]])
    np.testing.assert_allclose(pool_logits(logits, [3, 1], "max"), [[3, 5], [7, 7]])
    assert pool_logits(logits, [1, 1, 1, 1], "mean") is logits


# --- the strategies on the real tokenizer -----------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tiny_artifact: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(tiny_artifact / TOKENIZER_FILE))
    tok.no_truncation()
    tok.no_padding()
    return tok


def reference(tokenizer: Tokenizer, text: str, length: int, direction: str) -> list[int]:
    """The tokenizer's own truncation (``tokenizers``' ``direction``), special tokens included."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.enable_truncation(max_length=length, direction=direction)
    return copy.encode(text).ids


def test_framing_is_read_off_the_tokenizer(tokenizer: Tokenizer) -> None:
    framing = Framing(tokenizer)
    assert framing.head_ids == [tokenizer.token_to_id("[CLS]")]
    assert framing.tail_ids == [tokenizer.token_to_id("[SEP]")]
    assert framing.specials == tokenizer.post_processor.num_special_tokens_to_add(False)


def test_head_tail_is_the_tokenizers_own_head_and_tail(tiny_artifact: Path, tokenizer: Tokenizer) -> None:
    from triage_core.inference import TicketTokenizer

    max_length = 32
    ticket = TicketTokenizer(
        tiny_artifact / TOKENIZER_FILE, max_length, ["input_ids"], LongText(strategy="head_tail")
    )
    (cut,) = ticket.encode([LONG])
    assert isinstance(cut, Tokens) and len(cut.ids) == max_length
    head = round(30 * 0.25)  # budget 30 = 32 - [CLS] - [SEP]
    expected_head = reference(tokenizer, LONG, head + 2, "right")[:-1]  # [CLS] + first tokens
    expected_tail = reference(tokenizer, LONG, 30 - head + 2, "left")[1:]  # last tokens + [SEP]
    assert cut.ids == expected_head + expected_tail
    assert "escrow" in tokenizer.decode(cut.ids) and "checking" in tokenizer.decode(cut.ids)
    assert len(cut.type_ids) == max_length and not any(cut.type_ids)
    # A ticket that fits is the tokenizer's own encoding, as under "head".
    (short,) = ticket.encode(["where is my card"])
    assert list(short.ids) == tokenizer.encode("where is my card").ids


def test_windows_split_a_long_ticket_into_rows_of_max_length(
    tiny_artifact: Path, tokenizer: Tokenizer
) -> None:
    from triage_core.inference import TicketTokenizer

    strategy = LongText(strategy="windows", overlap=0.25, max_windows=64)
    ticket = TicketTokenizer(tiny_artifact / TOKENIZER_FILE, 32, ["input_ids"], strategy)
    (windows,) = ticket.encode([LONG])
    content = tokenizer.encode(LONG, add_special_tokens=False).ids
    assert isinstance(windows, Windows) and len(windows.ids) == 32
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    covered = []
    for part in windows.parts:
        assert part.ids[0] == cls and part.ids[-1] == sep and len(part.ids) == 32
        covered.append(part.ids[1:-1])
    # Window i is the ticket's tokens from its start on; consecutive starts are 30 - 30 // 4 + 1
    # apart at most (a quarter overlap), the last window ends with the ticket.
    starts = window_starts(len(content), 30, 0.25, 64)
    assert covered == [content[s : s + 30] for s in starts]
    assert len(starts) == -(-(len(content) - 30) // 23) + 1 and starts[-1] == len(content) - 30


# --- the strategies through ArtifactClassifier (real ONNX Runtime, fp32 tiny model) -----------
def fp32_artifact(tiny_artifact: Path, dst: Path, **changes: object) -> Path:
    shutil.copytree(tiny_artifact, dst)
    shutil.copyfile(fp32_onnx_path(tiny_artifact), dst / MODEL_FILE)
    data = json.loads((dst / MANIFEST_FILE).read_text("utf-8"))
    data.update(quantization="none", **changes)
    (dst / MANIFEST_FILE).write_text(json.dumps(data), "utf-8")
    return dst


def test_old_manifests_read_as_head(tiny_artifact: Path, tmp_path: Path) -> None:
    copy = fp32_artifact(tiny_artifact, tmp_path / "model")
    data = json.loads((copy / MANIFEST_FILE).read_text("utf-8"))
    for key in ("long_text", "model", "linear"):
        data.pop(key, None)
    (copy / MANIFEST_FILE).write_text(json.dumps(data), "utf-8")
    manifest = load_manifest(copy)
    assert manifest.long_text == LongText() and manifest.model == "transformer"


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_windows_scores_are_the_pooled_logits_of_each_window(
    tiny_artifact: Path, tmp_path: Path, pooling: str
) -> None:
    strategy = {"strategy": "windows", "pooling": pooling, "max_windows": 4}
    windowed = ArtifactClassifier(fp32_artifact(tiny_artifact, tmp_path / "w", long_text=strategy))
    head = ArtifactClassifier(fp32_artifact(tiny_artifact, tmp_path / "h"))
    texts = ["where is my card", LONG, "top up failed", LONG.upper() + " again", "refund"]
    scores = windowed.predict_scores(texts, batch_size=2)
    # Each window run alone through the session, pooled here: the same scores.
    (cleaned,) = windowed.clean([LONG])
    (windows,) = windowed.tokenizer.encode([cleaned])
    assert isinstance(windows, Windows) and len(windows.parts) == 4
    session, pad = windowed.session, windowed.tokenizer.pad
    logits = np.vstack([session.run(["logits"], pad([part]))[0] for part in windows.parts])
    pooled = logits.mean(axis=0) if pooling == "mean" else logits.max(axis=0)
    np.testing.assert_allclose(scores[1], scores_from_logits(pooled[None, :], "softmax")[0], atol=1e-5)
    # Tickets that fit score exactly as under "head"; the long ones differ from head truncation.
    short = [0, 2, 4]
    np.testing.assert_allclose(scores[short], head.predict_scores([texts[i] for i in short]), atol=1e-5)
    assert not np.allclose(scores[1], head.predict_scores([LONG])[0], atol=1e-4)
    # Order and batching do not matter.
    np.testing.assert_allclose(windowed.predict_scores(texts[::-1], batch_size=32)[::-1], scores, atol=1e-5)
