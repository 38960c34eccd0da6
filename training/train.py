"""Fine-tune a BERT-family encoder as a ticket classifier: a compact torch loop, tuned for CPU.

Why not ``transformers.Trainer``: on this 2-core machine two things decide the speed and both
are one line here: fused AdamW (``torch.optim.AdamW(fused=True)``, several times faster than the
per-parameter loop on CPU) and length-grouped batches (similar-length texts in a batch, so
little padding). Everything else (linear warmup/decay, class-weighted cross-entropy with label
smoothing, best checkpoint on validation macro-F1, early stopping) is a few lines.

Every text goes through :func:`triage_core.preprocessing.preprocess` with the
:class:`~triage_core.preprocessing.PreprocessConfig` that is stored in the artifact, so the
model learns on exactly what the server will feed it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.config import TrainConfig, resolve_base_model
from training.data import TicketDataset
from training.noise import make_noisy
from triage_core.preprocessing import preprocess_batch

log = logging.getLogger(__name__)

HISTORY_FILE = "train_metrics.jsonl"
CONFIG_FILE = "train_config.json"
MODEL_SUBDIR = "hf_model"


@dataclass
class TrainResult:
    model_dir: Path  # save_pretrained directory of the best checkpoint (model + tokenizer)
    labels: list[str]
    best_epoch: int
    best_val_macro_f1: float
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0


def class_weights(labels: list[str], label_names: list[str]) -> np.ndarray:
    """ "Balanced" weights n / (k * n_c): each class contributes equally to the loss."""
    counts = Counter(labels)
    n, k = len(labels), len(label_names)
    return np.array([n / (k * counts[name]) if counts[name] else 0.0 for name in label_names], np.float32)


def minority_oversample(
    texts: list[str], labels: list[str], min_examples: int, rng: random.Random
) -> tuple[list[str], list[str]]:
    """Add noisy copies (pool "train") of rows of labels below ``min_examples`` up to that count."""
    if min_examples <= 0:
        return texts, labels
    by_label: dict[str, list[str]] = {}
    for text, label in zip(texts, labels, strict=True):
        by_label.setdefault(label, []).append(text)
    extra_texts, extra_labels = [], []
    for label, rows in sorted(by_label.items()):
        for _ in range(max(0, min_examples - len(rows))):
            extra_texts.append(make_noisy(rng.choice(rows), rng, "train"))
            extra_labels.append(label)
    if extra_texts:
        log.info("minority oversampling: %d noisy copies added", len(extra_texts))
    return texts + extra_texts, labels + extra_labels


def length_grouped_batches(
    lengths: list[int], batch_size: int, group_batches: int, rng: random.Random
) -> list[list[int]]:
    """Shuffle, sort by length inside pools of ``group_batches`` batches, shuffle batch order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * group_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


class _Encoder:
    """Fast tokenizer with head truncation, producing only the inputs the model accepts."""

    def __init__(self, tokenizer, model, max_length: int) -> None:
        import inspect

        self.tokenizer = tokenizer
        self.tokenizer.truncation_side = "right"  # keep the head: see triage_core.preprocessing
        self.max_length = max_length
        accepted = set(inspect.signature(model.forward).parameters)
        self.names = [n for n in tokenizer.model_input_names if n in accepted]
        self.pad_id = tokenizer.pad_token_id or 0

    def encode(self, texts: list[str]) -> dict[str, list[list[int]]]:
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=False)
        return {n: enc[n] for n in self.names}

    def collate(self, encoded: dict[str, list[list[int]]], idx: list[int], device=None):
        import torch

        width = max(len(encoded["input_ids"][i]) for i in idx)
        batch = {}
        for name in self.names:
            pad = self.pad_id if name == "input_ids" else 0
            rows = [encoded[name][i] + [pad] * (width - len(encoded[name][i])) for i in idx]
            batch[name] = torch.tensor(rows, dtype=torch.long, device=device)
        return batch


def _set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict_logits(model, encoder: _Encoder, texts: list[str], batch_size: int) -> np.ndarray:
    """Logits of the torch model for preprocessed texts, in input order."""
    import torch

    encoded = encoder.encode(texts)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = model(**encoder.collate(encoded, idx, device)).logits.float().cpu().numpy()
    return out


def _macro_f1(y_true: list[int], y_pred: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return float(f1_score(y_true, y_pred, average="macro")), float(accuracy_score(y_true, y_pred))


def _is_head(name: str) -> bool:
    """The parameters a base encoder does not bring: pooler and classification head."""
    return name.startswith(("classifier.", "pre_classifier.")) or ".pooler." in name or "pooler" in name


def _optimizer(model, config: TrainConfig):
    import torch

    head_lr = config.head_learning_rate or config.learning_rate
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        groups.setdefault((_is_head(name), no_decay), []).append(param)
    param_groups = [
        {
            "params": params,
            "lr": head_lr if head else config.learning_rate,
            "weight_decay": 0.0 if no_decay else config.weight_decay,
        }
        for (head, no_decay), params in sorted(groups.items())
    ]
    try:  # fused AdamW: one kernel for all parameters; the per-tensor loop is far slower on CPU
        return torch.optim.AdamW(param_groups, lr=config.learning_rate, fused=True)
    except (RuntimeError, TypeError) as exc:
        log.warning("fused AdamW unavailable (%s); using the default implementation", exc)
        return torch.optim.AdamW(param_groups, lr=config.learning_rate)


def _linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    import torch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def load_model_and_tokenizer(base_model: str, labels: list[str]):
    """The base encoder with a fresh classification head for ``labels`` (in this order)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_base_model(base_model)
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    if not tokenizer.is_fast:
        raise ValueError(f"{base_model}: a fast tokenizer (tokenizer.json) is needed for serving")
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="single_label_classification",
        ignore_mismatched_sizes=True,  # a base that already has a head for other labels
    )
    return model, tokenizer


def train(
    config: TrainConfig,
    train_data: TicketDataset,
    validation_data: TicketDataset,
    work_dir: str | Path,
    labels: list[str] | None = None,
) -> TrainResult:
    """Fine-tune ``config.base_model`` and save the best epoch's model + tokenizer.

    Writes ``work_dir/hf_model/`` (``save_pretrained``), ``work_dir/train_metrics.jsonl`` (one
    JSON object per epoch) and ``work_dir/train_config.json``.
    """
    import torch
    from tqdm.auto import tqdm

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    labels = labels or train_data.label_names
    label_index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(train_data.labels) - set(label_index))
    if unknown:
        raise ValueError(f"training labels not in the label list: {unknown[:10]}")
    if config.threads:
        torch.set_num_threads(config.threads)
    _set_seed(config.seed)
    rng = random.Random(config.seed)
    config.save(work_dir / CONFIG_FILE)

    model, tokenizer = load_model_and_tokenizer(config.base_model, labels)
    # CPU here; a GPU when one exists (e.g. a SageMaker ml.g5 training job).
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    encoder = _Encoder(tokenizer, model, config.max_length)
    pre = config.preprocessing

    base_texts, base_labels = minority_oversample(
        list(train_data.texts), list(train_data.labels), config.minority_min_examples, rng
    )
    clean_train = preprocess_batch(base_texts, pre)
    y_train = torch.tensor([label_index[label] for label in base_labels], dtype=torch.long)
    val_texts = preprocess_batch(validation_data.texts, pre)
    y_val = [label_index.get(label, -1) for label in validation_data.labels]

    weight = None
    if config.class_weights:
        weight = torch.from_numpy(class_weights(base_labels, labels)).to(device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)

    steps_per_epoch = math.ceil(len(clean_train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = _optimizer(model, config)
    scheduler = _linear_schedule(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    history: list[dict[str, Any]] = []
    best_f1, best_epoch, best_state, stale = -1.0, 0, None, 0
    history_path = work_dir / HISTORY_FILE
    history_path.write_text("", encoding="utf-8")
    started = time.perf_counter()
    log.info(
        "fine-tuning %s on %d rows (%d labels), %d epochs x %d steps",
        config.base_model,
        len(clean_train),
        len(labels),
        config.epochs,
        steps_per_epoch,
    )
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        texts = list(clean_train)
        n_noisy = 0
        if config.noisy_augmentation > 0:
            # Fresh noise every epoch: the model sees each query both clean and wrapped.
            chosen = [i for i in range(len(texts)) if rng.random() < config.noisy_augmentation]
            noisy = preprocess_batch([make_noisy(base_texts[i], rng, "train") for i in chosen], pre)
            for i, text in zip(chosen, noisy, strict=True):
                texts[i] = text
            n_noisy = len(chosen)
        encoded = encoder.encode(texts)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        batches = length_grouped_batches(lengths, config.batch_size, config.length_group_batches, rng)

        model.train()
        total_loss, seen = 0.0, 0
        progress = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False)
        for idx in progress:
            inputs = encoder.collate(encoded, idx, device)
            logits = model(**inputs).logits
            loss = loss_fn(logits, y_train[idx].to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total_loss += loss.item() * len(idx)
            seen += len(idx)
            progress.set_postfix(loss=f"{total_loss / seen:.4f}")
        progress.close()
        train_seconds = time.perf_counter() - epoch_start

        val_logits = predict_logits(model, encoder, val_texts, config.eval_batch_size)
        val_f1, val_acc = _macro_f1(y_val, val_logits.argmax(axis=1))
        record = {
            "epoch": epoch,
            "train_loss": round(total_loss / max(1, seen), 5),
            "val_macro_f1": round(val_f1, 5),
            "val_accuracy": round(val_acc, 5),
            "lr": optimizer.param_groups[0]["lr"],
            "noisy_rows": n_noisy,
            "mean_tokens": round(float(np.mean(lengths)), 2),
            "epoch_seconds": round(time.perf_counter() - epoch_start, 1),
            "train_seconds": round(train_seconds, 1),
        }
        history.append(record)
        with history_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        improved = val_f1 > best_f1
        log.info(
            "epoch %d/%d: loss %.4f, val macro-F1 %.4f, val acc %.4f, %.0f s%s",
            epoch,
            config.epochs,
            record["train_loss"],
            val_f1,
            val_acc,
            record["epoch_seconds"],
            " (best)" if improved else "",
        )
        if improved:
            best_f1, best_epoch, stale = val_f1, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if config.early_stopping_patience and stale >= config.early_stopping_patience:
                log.info("early stopping: no improvement for %d epoch(s)", stale)
                break

    if best_state is not None:
        model.load_state_dict(best_state)
    model_dir = work_dir / MODEL_SUBDIR
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    elapsed = time.perf_counter() - started
    log.info(
        "best epoch %d (val macro-F1 %.4f); %.0f s; saved to %s", best_epoch, best_f1, elapsed, model_dir
    )
    return TrainResult(model_dir, list(labels), best_epoch, best_f1, history, elapsed)
