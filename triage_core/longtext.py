"""Tickets longer than the model reads: the maximum length and the long-ticket strategy.

One place for what training, evaluation and serving do with a ticket of more tokens than the
artifact's ``max_length`` (the manifest's ``long_text``):

* ``head`` (the default, and the only behaviour before): the first ``max_length`` tokens.
* ``head_tail``: the first ``head_share`` of the budget and the last tokens for the rest. Sun et
  al., "How to Fine-Tune BERT for Text Classification?" (2019), section 5.3.1: head 128 + tail
  382 of 512 scored best on long IMDb and Sogou documents, better than head or tail alone.
* ``windows``: overlapping windows of ``max_length`` tokens over the whole ticket (at most
  ``max_windows``, spread evenly when there are more), each scored by the model; the ticket's
  logits are the mean or the max over its windows.

A ticket that fits is encoded identically by all three (the tokenizer's own ``Encoding``), so
short tickets pay nothing for the strategy. :func:`choose_max_length` picks ``max_length`` from
the training data's token lengths. Nothing here imports torch: the serving image has none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

STRATEGIES = ("head", "head_tail", "windows")
# choose_max_length: the percentile of training token lengths the model reads in full, rounded
# up to a multiple of LENGTH_MULTIPLE (Banking77: p99 52 tokens -> 64, the measured default).
LENGTH_PERCENTILE = 99.0
LENGTH_MULTIPLE = 32
MIN_MAX_LENGTH = 32


class LongText(BaseModel):
    """The long-ticket strategy stored in the artifact manifest (``long_text``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["head", "head_tail", "windows"] = "head"
    head_share: float = Field(
        0.25, gt=0, lt=1, description="head_tail: share of the token budget for the head (rest: tail)"
    )
    overlap: float = Field(0.25, ge=0, lt=1, description="windows: share of a window repeated by the next")
    pooling: Literal["mean", "max"] = Field("mean", description="windows: how logits are pooled per ticket")
    max_windows: int = Field(8, ge=1, le=64, description="windows: at most this many per ticket")

    def label(self) -> str:
        if self.strategy == "windows":
            return f"windows-{self.pooling}"
        return self.strategy


def candidates() -> list[LongText]:
    """The strategies training compares on the validation split when tickets are long."""
    return [
        LongText(),
        LongText(strategy="head_tail"),
        LongText(strategy="windows", pooling="mean"),
        LongText(strategy="windows", pooling="max"),
    ]


def choose_max_length(
    token_lengths: Sequence[int],
    cap: int = 512,
    percentile: float = LENGTH_PERCENTILE,
    multiple: int = LENGTH_MULTIPLE,
    floor: int = MIN_MAX_LENGTH,
) -> int:
    """The ``percentile`` of the token lengths (special tokens included), rounded up to a multiple
    of ``multiple``, within [``floor``, ``cap``] (``cap``: the model's position embeddings)."""
    if not len(token_lengths):
        raise ValueError("no token lengths to choose a maximum length from")
    if cap < 8:
        raise ValueError(f"cap must be at least 8 tokens, got {cap}")
    high = float(np.percentile(np.asarray(token_lengths, dtype=np.float64), percentile))
    chosen = max(floor, multiple * math.ceil(high / multiple))
    return int(min(cap, chosen))


def token_lengths(tokenizer_file: str | Path, texts: Sequence[str]) -> list[int]:
    """Tokens of each (preprocessed) text with special tokens, untruncated and unpadded."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return [len(e.ids) for e in tokenizer.encode_batch(list(texts))]


def length_summary(token_lengths: Sequence[int], max_length: int) -> dict[str, float]:
    """Percentiles of the token lengths and the share of tickets longer than ``max_length``."""
    lengths = np.asarray(token_lengths, dtype=np.float64)
    return {
        "tickets": len(lengths),
        **{f"p{p}": float(np.percentile(lengths, p)) for p in (50, 90, 95, 99)},
        "max": float(lengths.max()),
        "max_length": int(max_length),
        "share_longer": float((lengths > max_length).mean()),
    }


class Tokens:
    """A ticket's ids and type ids, what the padding code reads: a ticket cut to fit
    (``head_tail``: lists), or one the compiled WordPiece encoded (:mod:`triage_core.wordpiece`:
    int64 arrays)."""

    __slots__ = ("ids", "type_ids")

    def __init__(self, ids: Sequence[int], type_ids: Sequence[int]):
        self.ids = ids
        self.type_ids = type_ids


class Windows:
    """A long ticket as several windows (``windows``): scored row by row, pooled to one row.

    ``ids`` is the longest window's ids: what the batcher sorts tickets by."""

    __slots__ = ("ids", "parts")

    def __init__(self, parts: list[Tokens]):
        self.parts = parts
        self.ids = max((p.ids for p in parts), key=len)


class Framing:
    """How the tokenizer wraps a text in special tokens (``[CLS] ... [SEP]``, ``<s> ... </s>``),
    read off the tokenizer itself so any BERT-family template works."""

    def __init__(self, tokenizer) -> None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a copy without padding or truncation
        tokenizer.no_padding()
        tokenizer.no_truncation()
        probe = "ticket triage probe"
        wrapped = tokenizer.encode(probe)
        bare = tokenizer.encode(probe, add_special_tokens=False).ids
        ids = wrapped.ids
        for start in range(len(ids) - len(bare) + 1):
            if ids[start : start + len(bare)] == bare:
                break
        else:
            raise ValueError("cannot find the text inside the tokenizer's special-token template")
        end = start + len(bare)
        self.head_ids, self.tail_ids = ids[:start], ids[end:]
        self.head_types, self.tail_types = wrapped.type_ids[:start], wrapped.type_ids[end:]
        self.content_type = wrapped.type_ids[start] if bare else 0
        self.specials = len(self.head_ids) + len(self.tail_ids)

    def wrap(self, content: list[int]) -> Tokens:
        return Tokens(
            self.head_ids + content + self.tail_ids,
            self.head_types + [self.content_type] * len(content) + self.tail_types,
        )


def window_starts(n: int, size: int, overlap: float, max_windows: int) -> list[int]:
    """Start offsets of windows of ``size`` covering ``n`` tokens: a stride of ``size * (1 -
    overlap)``, the last window ending at ``n``; more than ``max_windows``: spread evenly."""
    if n <= size:
        return [0]
    stride = max(1, int(size * (1 - overlap)))
    count = math.ceil((n - size) / stride) + 1
    if count > max_windows:
        return [round(float(x)) for x in np.linspace(0, n - size, max_windows)]
    return [min(i * stride, n - size) for i in range(count)]


def head_tail_positions(n: int, max_length: int, prefix: int, suffix: int, head_share: float) -> list[int]:
    """The positions ``head_tail`` keeps of a sequence of ``n`` tokens (``prefix`` special
    tokens first, ``suffix`` last): the specials, the first ``head_share`` of the content budget
    and the last tokens for the rest. Training's encoder cuts its rows with this, the server's
    tokenizer its tickets, so both read the same tokens."""
    if n <= max_length:
        return list(range(n))
    budget = max_length - prefix - suffix
    head = max(1, round(budget * head_share))
    tail_start = n - suffix - (budget - head)
    return [*range(prefix + head), *range(tail_start, n)]


def fit_long(content: list[int], framing: Framing, max_length: int, strategy: LongText) -> Tokens | Windows:
    """A ticket's content ids (no special tokens) longer than the budget, cut by ``strategy``."""
    budget = max_length - framing.specials
    if strategy.strategy == "head":
        return framing.wrap(content[:budget])
    if strategy.strategy == "head_tail":
        keep = head_tail_positions(len(content), budget, 0, 0, strategy.head_share)
        return framing.wrap([content[i] for i in keep])
    starts = window_starts(len(content), budget, strategy.overlap, strategy.max_windows)
    return Windows([framing.wrap(content[s : s + budget]) for s in starts])


def pool_logits(logits: np.ndarray, counts: Sequence[int], pooling: str) -> np.ndarray:
    """One row per ticket from ``counts[i]`` consecutive rows of ``logits`` (mean or max)."""
    counts = np.asarray(counts)
    if (counts == 1).all():
        return logits
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    if pooling == "max":
        return np.maximum.reduceat(logits, starts, axis=0)
    return np.add.reduceat(logits, starts, axis=0) / counts[:, None]
