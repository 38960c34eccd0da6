"""Long tickets in training: the maximum length from the data, the strategy from validation.

* :func:`data_max_length`: the base model's tokenizer on the preprocessed training texts;
  :func:`triage_core.longtext.choose_max_length` rounds their 99th percentile up to a multiple
  of 32, capped at the model's position embeddings (512 for the BERT family). Banking77 gives
  64, the default measured before; ``--max-length`` still overrides it.
* :func:`select_long_text`: when validation tickets are longer than ``max_length``, the served
  artifact scores the validation split once per candidate strategy (``head``, ``head_tail``,
  ``windows`` mean and max: inference only) and the best macro-F1 is written into the manifest;
  otherwise ``head`` stays (every strategy encodes a ticket that fits the same way).
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


def data_max_length(
    base_model: str, texts: list[str], given: int | None = None
) -> tuple[int, dict[str, Any]]:
    """The maximum length chosen from ``texts`` (preprocessed training texts), or ``given``
    (``--max-length``), and a summary of the token lengths against it."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from training.config import resolve_base_model

    path = resolve_base_model(base_model)
    backend = AutoTokenizer.from_pretrained(path, use_fast=True).backend_tokenizer
    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    cap = model_limit(path)
    chosen = given if given is not None else choose_max_length(lengths, cap=cap)
    source = "--max-length" if given is not None else "training data"
    return chosen, {**length_summary(lengths, chosen), "model_limit": cap, "source": source}


def select_long_text(artifact_dir: Path, validation, reports_dir: Path | None = None) -> dict[str, Any]:
    """Compare the long-ticket strategies on the validation split with the served artifact and
    write the winner into its manifest. Returns the comparison (also ``<reports>/long_text.json``)."""

    from training.evaluate import classification_report
    from triage_core.artifact import load_manifest, write_manifest
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
    write_manifest(
        artifact_dir,
        manifest.model_validate({**manifest.model_dump(), "long_text": best["settings"]}),
    )
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


def max_length_step(run, config, splits):
    """The pipeline step: ``config`` with ``max_length`` chosen from the training split (unless
    ``--max-length`` was given) and, when over :data:`LONG_SHARE` of the training tickets are
    longer, fine-tuning on their head and tail (unless ``truncation`` was given). Returns
    ``(config, summary)``."""
    import dataclasses

    from training.config import resolve_base_model
    from triage_core.preprocessing import preprocess_batch

    preprocessing = config.preprocessing
    texts = preprocess_batch(splits.train.texts, preprocessing)
    cut = sum(len(t) >= preprocessing.max_chars for t in texts) / max(1, len(texts))
    room = CHARS_PER_TOKEN * model_limit(resolve_base_model(config.base_model)) * LongText().max_windows
    if cut and preprocessing.max_chars < room:
        # Preprocessing caps a cleaned ticket at max_chars before tokenizing: make room for what
        # the strategies can read (serving applies the same config from the manifest).
        preprocessing = preprocessing.model_copy(update={"max_chars": room})
        texts = preprocess_batch(splits.train.texts, preprocessing)
    given = config.max_length if "max_length" in run.hyperparameters else None
    chosen, summary = data_max_length(config.base_model, texts, given)
    summary["share_cut_at_max_chars"] = round(cut, 4)
    if preprocessing is not config.preprocessing:
        summary["max_chars"] = {"from": config.preprocessing.max_chars, "to": preprocessing.max_chars}
    truncation = config.truncation
    if "truncation" not in run.hyperparameters and summary["share_longer"] > LONG_SHARE:
        truncation = "head_tail"  # fine-tune on what the long-ticket strategy will most likely read
    summary["fine_tuning_truncation"] = truncation
    log.info(
        "max length %d tokens (%s; training split p50 %.0f, p99 %.0f, max %.0f tokens, %.1f%% longer); "
        "fine-tuning reads the %s",
        chosen,
        summary["source"],
        summary["p50"],
        summary["p99"],
        summary["max"],
        100 * summary["share_longer"],
        "head and tail of longer tickets" if truncation == "head_tail" else "head of longer tickets",
    )
    if "max_chars" in summary:
        log.info(
            "%.1f%% of the training tickets reach preprocessing's max_chars (%d characters): raised to "
            "%d so that the long-ticket strategies can read them",
            100 * cut,
            config.preprocessing.max_chars,
            preprocessing.max_chars,
        )
    return (
        dataclasses.replace(config, max_length=chosen, truncation=truncation, preprocessing=preprocessing),
        summary,
    )
