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

import dataclasses
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable
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
    train_seconds: float = 0.0  # fine-tuning plus the pre-stages (MLM, contrastive, soft labels)
    stages: dict[str, Any] = field(default_factory=dict)


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
        from training.modeling import input_names

        self.tokenizer = tokenizer
        self.tokenizer.truncation_side = "right"  # keep the head: see triage_core.preprocessing
        self.max_length = max_length
        accepted = input_names(model)
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


def parameter_groups(model, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups: head vs encoder learning rate, no weight decay on biases and
    LayerNorm, and with ``layer_lr_decay`` < 1 one group per encoder depth: the top layer at
    ``learning_rate``, each layer below multiplied by the decay, the embeddings lowest."""
    from training.modeling import is_head_parameter, layer_depth, num_layers

    head_lr = config.head_learning_rate or config.learning_rate
    n_layers = num_layers(model)
    groups: dict[tuple[bool, int, bool], list] = {}
    names: dict[tuple[bool, int, bool], list[str]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        head = is_head_parameter(model, name)
        depth = -1 if head or config.layer_lr_decay == 1.0 else layer_depth(name, n_layers)
        no_decay = param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or "norm." in name
        groups.setdefault((head, depth, no_decay), []).append(param)
        names.setdefault((head, depth, no_decay), []).append(name)

    def lr(head: bool, depth: int) -> float:
        if head:
            return head_lr
        if depth < 0:
            return config.learning_rate
        return config.learning_rate * config.layer_lr_decay ** max(0, n_layers - depth)

    return [
        {
            "params": params,
            "names": names[key],
            "lr": lr(key[0], key[1]),
            "weight_decay": 0.0 if key[2] else config.weight_decay,
            "depth": "head" if key[0] else key[1],
        }
        for key, params in sorted(groups.items())
    ]


def _optimizer(model, config: TrainConfig):
    import torch

    param_groups = parameter_groups(model, config)
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


def load_model_and_tokenizer(
    base_model: str, labels: list[str], head: str = "cls", head_hidden: int = 0, head_dropout: float = 0.1
):
    """The base encoder with a fresh classification head for ``labels`` (in this order)."""
    from transformers import AutoTokenizer

    from training.modeling import build_classifier

    path = resolve_base_model(base_model)
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    if not tokenizer.is_fast:
        raise ValueError(f"{base_model}: a fast tokenizer (tokenizer.json) is needed for serving")
    model = build_classifier(path, labels, head=head, hidden=head_hidden, dropout=head_dropout)
    return model, tokenizer


def _init_ovr_bias(model, n_labels: int) -> None:
    """One-vs-rest starts at sigmoid = 1/K per class (bias -log(K-1)), not 0.5: otherwise the
    first steps only push 76 of 77 outputs down."""
    import torch

    last = None
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == n_labels:
            last = module
    if last is not None and last.bias is not None:
        with torch.no_grad():
            last.bias.fill_(-math.log(max(1, n_labels - 1)))


def _set_encoder_trainable(model, trainable: bool, freeze_embeddings: bool = False) -> None:
    """(Un)freeze the encoder; with ``freeze_embeddings`` the word embeddings stay frozen."""
    from training.modeling import encoder_of, is_head_parameter

    for name, param in model.named_parameters():
        if not is_head_parameter(model, name):
            param.requires_grad_(trainable)
    if freeze_embeddings:
        encoder_of(model).get_input_embeddings().weight.requires_grad_(False)


class _Loss:
    """Softmax cross-entropy or one-vs-rest binary cross-entropy, with label smoothing, class
    weights and optional distillation soft labels."""

    def __init__(self, config: TrainConfig, n_labels: int, weight, soft_targets=None) -> None:
        import torch

        self.config = config
        self.n_labels = n_labels
        self.weight = weight
        self.soft = soft_targets
        self.ce = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)

    def __call__(self, logits, y, rows: list[int]):
        import torch.nn.functional as F

        config = self.config
        if config.loss == "ovr":
            eps = config.label_smoothing
            targets = F.one_hot(y, self.n_labels).to(logits.dtype) * (1 - eps) + eps / self.n_labels
            per_row = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(dim=1)
            if self.weight is None:
                return per_row.mean()
            w = self.weight[y]
            return (per_row * w).sum() / w.sum()
        hard = self.ce(logits, y)
        if self.soft is None:
            return hard
        t = config.distill_temperature
        teacher = self.soft[rows].to(logits.device)
        soft = F.kl_div(F.log_softmax(logits / t, dim=-1), teacher, reduction="batchmean") * t * t
        return config.distill_alpha * soft + (1 - config.distill_alpha) * hard


def train(
    config: TrainConfig,
    train_data: TicketDataset,
    validation_data: TicketDataset,
    work_dir: str | Path,
    labels: list[str] | None = None,
    on_epoch_end: Callable[[int, Any], None] | None = None,
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

    started = time.perf_counter()
    stages: dict[str, Any] = {}
    teacher_dirs = list(config.distill_teachers)
    if config.distill_seeds:
        teacher_dirs += _train_seed_teachers(config, train_data, validation_data, work_dir, labels)
        _set_seed(config.seed)
        rng = random.Random(config.seed)

    model, tokenizer = load_model_and_tokenizer(
        config.base_model, labels, config.head, config.head_hidden, config.head_dropout
    )
    if config.loss == "ovr":
        _init_ovr_bias(model, len(labels))
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

    stages.update(_pre_stages(config, model, tokenizer, clean_train, y_train.tolist(), rng, device))

    weight = None
    if config.class_weights:
        weight = torch.from_numpy(class_weights(base_labels, labels)).to(device)
    soft_targets = None
    if teacher_dirs:
        from training.stages import teacher_probabilities

        t0 = time.perf_counter()
        soft_targets = torch.from_numpy(
            teacher_probabilities(
                teacher_dirs,
                clean_train,
                labels,
                temperature=config.distill_temperature,
                max_length=config.max_length,
                batch_size=config.eval_batch_size,
                device=device,
            )
        )
        stages["distill"] = {"teachers": [str(t) for t in teacher_dirs], "seconds": _since(t0)}
    loss_fn = _Loss(config, len(labels), weight, soft_targets)

    steps_per_epoch = math.ceil(len(clean_train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    # Frozen word embeddings are left out of the optimizer (parameter_groups skips them).
    _set_encoder_trainable(model, True, config.freeze_embeddings)
    optimizer = _optimizer(model, config)
    scheduler = _linear_schedule(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    history: list[dict[str, Any]] = []
    best_f1, best_epoch, best_state, stale = -1.0, 0, None, 0
    history_path = work_dir / HISTORY_FILE
    history_path.write_text("", encoding="utf-8")
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

        frozen = epoch <= config.freeze_encoder_epochs
        _set_encoder_trainable(model, not frozen, config.freeze_embeddings)
        model.train()
        total_loss, seen = 0.0, 0
        progress = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False)
        for idx in progress:
            inputs = encoder.collate(encoded, idx, device)
            logits = model(**inputs).logits
            loss = loss_fn(logits, y_train[idx].to(device), idx)
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
            "encoder_frozen": frozen,
            "noisy_rows": n_noisy,
            "mean_tokens": round(float(np.mean(lengths)), 2),
            "epoch_seconds": round(time.perf_counter() - epoch_start, 1),
            "train_seconds": round(train_seconds, 1),
        }
        history.append(record)
        if on_epoch_end is not None:  # e.g. tests inspecting the weights epoch by epoch
            on_epoch_end(epoch, model)
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

    _set_encoder_trainable(model, True)
    if best_state is not None:
        model.load_state_dict(best_state)
    model_dir = work_dir / MODEL_SUBDIR
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    elapsed = time.perf_counter() - started
    log.info(
        "best epoch %d (val macro-F1 %.4f); %.0f s; saved to %s", best_epoch, best_f1, elapsed, model_dir
    )
    return TrainResult(model_dir, list(labels), best_epoch, best_f1, history, elapsed, stages)


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 1)


def _pre_stages(config: TrainConfig, model, tokenizer, texts: list[str], y: list[int], rng, device):
    """MLM domain adaptation, then the contrastive stage, on the classifier's encoder in place."""
    from training.modeling import encoder_of

    stages: dict[str, Any] = {}
    if config.mlm_epochs > 0:
        from training.stages import load_unlabeled_texts, mlm_adapt

        t0 = time.perf_counter()
        unlabeled = (
            preprocess_batch(load_unlabeled_texts(config.mlm_data), config.preprocessing)
            if config.mlm_data
            else list(texts)
        )
        stats = mlm_adapt(
            encoder_of(model),
            resolve_base_model(config.base_model),
            tokenizer,
            unlabeled,
            epochs=config.mlm_epochs,
            learning_rate=config.mlm_learning_rate,
            batch_size=config.batch_size,
            max_length=config.max_length,
            mlm_probability=config.mlm_probability,
            seed=config.seed,
            device=device,
        )
        stages["mlm"] = {**stats, "texts": len(unlabeled), "seconds": _since(t0)}
    if config.contrastive_epochs > 0:
        from training.stages import contrastive_stage

        t0 = time.perf_counter()
        stage_texts = list(texts)
        if config.noisy_augmentation > 0:  # the same share of noisy tickets as fine-tuning sees
            for i in range(len(stage_texts)):
                if rng.random() < config.noisy_augmentation:
                    stage_texts[i] = preprocess_batch(
                        [make_noisy(stage_texts[i], rng, "train")], config.preprocessing
                    )[0]
        stats = contrastive_stage(
            encoder_of(model),
            tokenizer,
            stage_texts,
            y,
            epochs=config.contrastive_epochs,
            learning_rate=config.contrastive_learning_rate,
            batch_size=config.batch_size,
            max_length=config.max_length,
            temperature=config.contrastive_temperature,
            seed=config.seed,
            device=device,
        )
        stages["contrastive"] = {**stats, "seconds": _since(t0)}
    return stages


def _train_seed_teachers(
    config: TrainConfig, train_data: TicketDataset, validation_data: TicketDataset, work_dir: Path, labels
) -> list[Path]:
    """Train one teacher per ``distill_seeds`` seed (same config, no distillation)."""
    teachers = []
    for seed in config.distill_seeds:
        teacher_config = dataclasses.replace(config, seed=seed, distill_seeds=[], distill_teachers=[])
        log.info("training distillation teacher with seed %d", seed)
        result = train(
            teacher_config, train_data, validation_data, work_dir / "teachers" / f"seed-{seed}", labels
        )
        teachers.append(result.model_dir)
    return teachers
