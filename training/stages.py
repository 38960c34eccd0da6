"""Stages that run on the encoder before (or around) fine-tuning.

* :func:`mlm_adapt`: domain adaptation. Continued masked-language-model pretraining of the
  encoder on unlabeled ticket text (``AutoModelForMaskedLM`` + ``DataCollatorForLanguageModeling``,
  15 % of tokens masked, 80/10/10 mask/random/keep). all-MiniLM-L6-v2's checkpoint has no MLM
  head weights (sentence-transformers dropped it), so the head starts random: it learns during
  the stage, is thrown away afterwards, and only the encoder weights are copied back.
* :func:`contrastive_stage`: SetFit-style. Pairs of tickets with the same label are positives,
  the other pairs of the batch are negatives (in-batch negatives, symmetric InfoNCE over the
  cosine similarities of mean-pooled embeddings, as sentence-transformers'
  MultipleNegativesRankingLoss). One label per anchor in a batch, so no false negatives.
* :func:`teacher_probabilities`: the averaged soft labels of several fine-tuned teachers for
  distillation into one student.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def adamw(params, lr: float, weight_decay: float = 0.0):
    """Fused AdamW (one kernel for all parameters; the per-tensor loop is far slower on CPU)."""
    import torch

    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError) as exc:
        log.warning("fused AdamW unavailable (%s); using the default implementation", exc)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _linear_warmup(optimizer, total_steps: int, warmup_ratio: float = 0.1):
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, max(1, int(total_steps * warmup_ratio)), total_steps)


def load_unlabeled_texts(path: str | Path, text_column: str = "text") -> list[str]:
    """Unlabeled tickets: ``.txt`` (one ticket per line), or CSV/JSON Lines with a text column."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        import json

        lines = [
            json.loads(line).get(text_column, "")
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    else:
        import csv

        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if text_column not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no column {text_column!r} (columns: {reader.fieldnames})")
            lines = [row[text_column] or "" for row in reader]
    texts = [t.strip() for t in lines if t and t.strip()]
    if not texts:
        raise ValueError(f"{path}: no unlabeled text found")
    return texts


def mlm_adapt(
    encoder,
    base_path: str,
    tokenizer,
    texts: list[str],
    *,
    epochs: float,
    learning_rate: float,
    batch_size: int,
    max_length: int,
    mlm_probability: float = 0.15,
    seed: int = 42,
    device=None,
) -> dict[str, float]:
    """Continue MLM pretraining of ``encoder`` (in place) on ``texts``. Returns loss stats.

    An ``AutoModelForMaskedLM`` of the same architecture is built from ``base_path``, its encoder
    gets ``encoder``'s weights, it trains for ``epochs`` passes, and its encoder weights are
    copied back into ``encoder`` (the classifier's).
    """
    import torch
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

    torch.manual_seed(seed)
    mlm = AutoModelForMaskedLM.from_pretrained(base_path)
    missing, _ = mlm.base_model.load_state_dict(encoder.state_dict(), strict=False)
    if [k for k in missing if "pooler" not in k]:
        raise ValueError(f"MLM model and classifier encoder differ: missing {missing[:5]}")
    mlm.to(device or "cpu").train()
    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm=True, mlm_probability=mlm_probability, return_tensors="pt"
    )
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    rng = random.Random(seed)
    order = list(range(len(encoded)))
    steps = max(1, math.ceil(epochs * len(encoded) / batch_size))
    optimizer = adamw([p for p in mlm.parameters() if p.requires_grad], learning_rate, 0.01)
    scheduler = _linear_warmup(optimizer, steps)
    losses: list[float] = []
    position = len(order)
    for _ in range(steps):
        if position + batch_size > len(order):
            rng.shuffle(order)
            position = 0
        idx = order[position : position + batch_size]
        position += batch_size
        batch = collator([{"input_ids": encoded[i]} for i in idx])
        batch = {k: v.to(mlm.device) for k, v in batch.items()}
        loss = mlm(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mlm.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
    encoder.load_state_dict(mlm.base_model.state_dict(), strict=False)
    tenth = max(1, len(losses) // 10)
    stats = {
        "steps": steps,
        "loss_first": round(float(np.mean(losses[:tenth])), 4),
        "loss_last": round(float(np.mean(losses[-tenth:])), 4),
    }
    log.info("MLM domain adaptation: %d steps on %d texts, loss %s", steps, len(texts), stats)
    return stats


def contrastive_stage(
    encoder,
    tokenizer,
    texts: list[str],
    labels: list[int],
    *,
    epochs: float,
    learning_rate: float,
    batch_size: int,
    max_length: int,
    temperature: float = 0.05,
    seed: int = 42,
    device=None,
) -> dict[str, float]:
    """SetFit-style contrastive training of ``encoder`` (in place) on labelled ``texts``.

    Each step takes up to ``batch_size`` distinct labels and, for each, an anchor and a positive
    ticket of that label; loss = symmetric cross-entropy of the anchor x positive cosine
    similarity matrix / ``temperature`` (every other pair in the batch is a negative).
    ``epochs`` counts anchors: ``epochs * len(texts) / batch_size`` steps.
    """
    import torch
    import torch.nn.functional as F

    from training.modeling import mean_pool

    rng = random.Random(seed)
    torch.manual_seed(seed)
    by_label: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    usable = [y for y, rows in by_label.items() if len(rows) >= 2]
    if len(usable) < 2:
        raise ValueError("the contrastive stage needs at least 2 labels with 2 or more examples")
    per_step = min(batch_size, len(usable))
    steps = max(1, math.ceil(epochs * len(texts) / per_step))
    accepted = set(__import__("inspect").signature(encoder.forward).parameters)

    def embed(batch_texts: list[str]):
        enc = tokenizer(
            batch_texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        inputs = {k: v.to(device or "cpu") for k, v in enc.items() if k in accepted}
        return F.normalize(mean_pool(encoder(**inputs).last_hidden_state, inputs["attention_mask"]), dim=-1)

    encoder.train()
    optimizer = adamw([p for p in encoder.parameters() if p.requires_grad], learning_rate, 0.01)
    scheduler = _linear_warmup(optimizer, steps)
    targets = torch.arange(per_step, device=device or "cpu")
    losses: list[float] = []
    for _ in range(steps):
        chosen = rng.sample(usable, per_step)
        pairs = [rng.sample(by_label[y], 2) for y in chosen]
        anchors = embed([texts[a] for a, _ in pairs])
        positives = embed([texts[p] for _, p in pairs])
        sim = anchors @ positives.T / temperature
        loss = (F.cross_entropy(sim, targets) + F.cross_entropy(sim.T, targets)) / 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
    tenth = max(1, len(losses) // 10)
    stats = {
        "steps": steps,
        "loss_first": round(float(np.mean(losses[:tenth])), 4),
        "loss_last": round(float(np.mean(losses[-tenth:])), 4),
    }
    log.info("contrastive stage: %d steps of %d pairs, loss %s", steps, per_step, stats)
    return stats


def teacher_probabilities(
    teacher_dirs: list[str | Path],
    texts: list[str],
    labels: list[str],
    *,
    temperature: float,
    max_length: int,
    batch_size: int = 128,
    device=None,
) -> np.ndarray:
    """Mean over teachers of softmax(logits / temperature) on (preprocessed) ``texts``.

    Teachers may be different architectures and heads; each uses its own tokenizer. They must
    have the same ordered labels as the student.
    """
    from transformers import AutoTokenizer

    from training.batches import TextEncoder, predict_logits
    from training.modeling import load_classifier

    total = np.zeros((len(texts), len(labels)), dtype=np.float64)
    for directory in teacher_dirs:
        model = load_classifier(directory)
        id2label = {int(k): v for k, v in model.config.id2label.items()}
        if [id2label.get(i) for i in range(len(labels))] != list(labels) or model.config.num_labels != len(
            labels
        ):
            raise ValueError(f"teacher {directory} does not have the student's labels in the same order")
        model.to(device or "cpu")
        tokenizer = AutoTokenizer.from_pretrained(directory, use_fast=True)
        logits = predict_logits(model, TextEncoder(tokenizer, model, max_length), texts, batch_size)
        scaled = logits / temperature
        scaled -= scaled.max(axis=1, keepdims=True)
        probs = np.exp(scaled)
        total += probs / probs.sum(axis=1, keepdims=True)
        log.info("teacher %s: soft labels for %d texts", directory, len(texts))
    return (total / len(teacher_dirs)).astype(np.float32)
