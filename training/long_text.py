"""Long tickets in training: the maximum length from the data, the strategy from validation.

* :func:`max_length_rule` (the ``auto`` recipe's rule, ``training.recipe.choose_max_length``):
  :func:`triage_core.longtext.choose_max_length` rounds the training split's 99th percentile
  of token lengths up to a multiple of 32, capped at the model's position embeddings (512 for
  the BERT family). Banking77 gives 64, the default measured before; ``--max-length`` (or a
  preset) still decides. :func:`truncation_rule`: fine-tuning reads head + tail of long
  tickets. :func:`make_room_for_long_tickets`: preprocessing's character cap out of their way.
* :func:`select_long_text`: when validation tickets are longer than ``max_length``, the served
  artifact scores the validation split once per candidate strategy (``head``, ``head_tail``,
  ``windows`` mean and max: inference only) and the best macro-F1 is written into the manifest
  when over :data:`LONG_SHARE` of them are longer; otherwise ``head`` stays (every strategy
  encodes a ticket that fits the same way).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from triage_core.longtext import LongText, candidates, choose_max_length, length_summary

log = logging.getLogger(__name__)

REPORT_FILE = "long_text.json"
LONG_SHARE = 0.01  # over this share of long training tickets, fine-tuning reads head + tail
CHARS_PER_TOKEN = 8  # generous: English runs about 4-5 characters per WordPiece token


def model_limit(base_model_path: str) -> int:
    """Tokens the model can read: its position embeddings (RoBERTa keeps 2 for padding), <= 512."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_model_path)
    positions = int(getattr(config, "max_position_embeddings", 512) or 512)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        positions -= 2
    return max(8, min(512, positions))


def max_length_rule(config, token_lengths) -> tuple[int, str]:
    """The recipe's maximum-length rule (``training.recipe.choose_max_length``): the training
    split's token lengths -> :func:`triage_core.longtext.choose_max_length`, capped at what the
    base model can read."""
    from training.config import resolve_base_model

    if not token_lengths:
        return config.max_length, "no token lengths measured: the family preset's length"
    cap = model_limit(resolve_base_model(config.base_model))
    chosen = choose_max_length(token_lengths, cap=cap)
    stats = length_summary(token_lengths, chosen)
    return chosen, (
        f"99th percentile of the training split's token lengths ({stats['p99']:.0f}) rounded up to a "
        f"multiple of 32, at most the model's {cap}; "
        f"{100 * stats['share_longer']:.1f}% of the tickets are longer"
    )


def truncation_rule(config, token_lengths) -> tuple[str, str]:
    """The recipe's fine-tuning truncation rule: ``head_tail`` when over :data:`LONG_SHARE` of
    the training tickets are longer than ``max_length`` (what the long-ticket strategies most
    likely read), else ``head``."""
    if not token_lengths:
        return config.truncation, "no token lengths measured"
    longer = sum(n > config.max_length for n in token_lengths) / len(token_lengths)
    if longer > LONG_SHARE:
        return (
            "head_tail",
            f"{100 * longer:.1f}% of the training tickets are longer than {config.max_length} tokens",
        )
    return "head", f"{100 * longer:.1f}% of the training tickets are longer than {config.max_length} tokens"


def make_room_for_long_tickets(run, base_model: str, splits):
    """``run`` with preprocessing's ``max_chars`` raised when training tickets reach it: the cap
    applies before tokenizing, so it would cut what the long-ticket strategies read (and what
    the token lengths measure). Raised to :data:`CHARS_PER_TOKEN` x the model's limit x the
    windows strategy's windows (32,768 characters for 512 tokens); serving applies the same
    config from the manifest."""
    import dataclasses

    from training.config import resolve_base_model
    from triage_core.preprocessing import preprocess_batch

    preprocessing = run.preprocessing
    texts = preprocess_batch(list(splits.train.texts), preprocessing)
    reached = sum(len(t) >= preprocessing.max_chars for t in texts)
    room = CHARS_PER_TOKEN * model_limit(resolve_base_model(base_model)) * LongText().max_windows
    if not reached or preprocessing.max_chars >= room:
        return run
    log.info(
        "%d training ticket(s) reach preprocessing's max_chars (%d characters): raised to %d so that the "
        "long-ticket strategies can read them",
        reached,
        preprocessing.max_chars,
        room,
    )
    return dataclasses.replace(run, preprocessing=preprocessing.model_copy(update={"max_chars": room}))


def select_long_text(artifact_dir: Path, validation, reports_dir: Path | None = None) -> dict[str, Any]:
    """Compare the long-ticket strategies on the validation split with the served artifact and
    write the winner into its manifest. Returns the comparison (also ``<reports>/long_text.json``)."""

    from training.evaluate import classification_report
    from triage_core.artifact import edited_manifest, load_manifest
    from triage_core.inference import ArtifactClassifier

    classifier = ArtifactClassifier(artifact_dir)
    manifest = classifier.manifest
    lengths = [len(e.ids) for e in _untruncated(classifier, validation.texts)]
    summary = length_summary(lengths, manifest.max_length)
    long_rows = np.array([n > manifest.max_length for n in lengths])
    report: dict[str, Any] = {"validation_lengths": summary, "chosen_on": "validation"}
    if not long_rows.any():
        report.update(strategy=manifest.long_text.model_dump(), reason="no validation ticket is longer")
        log.info("long tickets: none in validation over %d tokens; strategy head", manifest.max_length)
        return _write(report, reports_dir)
    index = {label: i for i, label in enumerate(classifier.labels)}
    y = np.array([index[label] for label in validation.labels])
    rows = []
    for strategy in candidates():
        classifier.use_long_text(strategy)
        scores = classifier.predict_scores(validation.texts)
        whole = classification_report(y, scores, classifier.labels)
        right = scores.argmax(axis=1) == y
        rows.append(
            {
                "strategy": strategy.label(),
                "settings": strategy.model_dump(),
                "macro_f1": round(whole["macro_f1"], 4),
                "accuracy": round(whole["accuracy"], 4),
                "long_tickets_accuracy": round(float(right[long_rows].mean()), 4),
            }
        )
    best = max(rows, key=lambda r: (r["macro_f1"], r["accuracy"]))  # ties: the first (head)
    if summary["share_longer"] <= LONG_SHARE:
        # A handful of long tickets (Banking77: 0.3 % of its tickets) would choose by one ticket's flip.
        best = rows[0]
        report["reason"] = (
            f"at most {LONG_SHARE:.0%} of the validation tickets are longer: too few to choose on"
        )
    with edited_manifest(artifact_dir) as stored:
        stored["long_text"] = best["settings"]
    load_manifest(artifact_dir)
    report.update(candidates=rows, strategy=best["settings"], winner=best["strategy"])
    log.info(
        "long tickets: %.1f%% of validation over %d tokens; strategy %s (validation macro-F1: %s)",
        100 * summary["share_longer"],
        manifest.max_length,
        best["strategy"],
        ", ".join(f"{r['strategy']} {r['macro_f1']:.4f}" for r in rows),
    )
    return _write(report, reports_dir)


def _untruncated(classifier, texts: list[str]):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(classifier.tokenizer.tokenizer.to_str())
    tokenizer.no_truncation()
    return tokenizer.encode_batch(classifier.clean(list(texts)))


def _write(report: dict[str, Any], reports_dir: Path | None) -> dict[str, Any]:
    import json

    if reports_dir is not None:
        Path(reports_dir).mkdir(parents=True, exist_ok=True)
        (Path(reports_dir) / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
