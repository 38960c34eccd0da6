"""Fine-tune a BERT-family encoder as a ticket classifier, on Hugging Face Accelerate.

The loop is a plain torch loop driven by ``accelerate.Accelerator`` rather than
``transformers.Trainer``: the custom stages (MLM, contrastive, distillation soft labels), the
noisy augmentation that draws fresh noise every epoch and the length-grouped batches fit a loop
better than Trainer's callbacks, while Accelerate brings what a bigger run needs:

* mixed precision on a GPU (bf16 where supported, else fp16 with loss scaling; ``--mixed-precision``),
* gradient accumulation (``--gradient-accumulation-steps``),
* data parallelism: the same script under ``torchrun --nproc-per-node N`` (or a multi-GPU
  SageMaker instance with the estimator's ``torch_distributed`` setting) trains one model on N
  processes (NCCL on GPUs, gloo on CPUs); each process takes its share of every epoch's batches,
* checkpoint/resume: model, optimizer, scheduler and RNG states (``Accelerator.save_state``) plus
  the loop's own state after every epoch (and every ``--save-steps`` optimizer steps), in
  ``checkpoint_dir`` (``/opt/ml/checkpoints`` in a SageMaker spot job, synced to S3). A run with
  the same config and data resumes there, mid-epoch included; anything else starts afresh.

What decides CPU speed is kept from the first loop: fused AdamW and length-grouped batches
(similar-length texts in a batch, so little padding).

Every text goes through :func:`triage_core.preprocessing.preprocess` with the
:class:`~triage_core.preprocessing.PreprocessConfig` that is stored in the artifact, so the
model learns on exactly what the server will feed it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.batches import TextEncoder, length_grouped_batches, predict_logits, sorted_batches
from training.config import TrainConfig, resolve_base_model
from training.data import TicketDataset
from training.noise import make_noisy
from triage_core.preprocessing import preprocess_batch

log = logging.getLogger(__name__)

HISTORY_FILE = "train_metrics.jsonl"
CONFIG_FILE = "train_config.json"
MODEL_SUBDIR = "hf_model"
CHECKPOINT_SUBDIR = "checkpoint"
STATE_FILE = "loop_state.json"
BEST_WEIGHTS = "best_model.safetensors"

__all__ = ["TextEncoder", "length_grouped_batches", "predict_logits", "train"]


@dataclass
class TrainResult:
    model_dir: Path  # save_pretrained directory of the best checkpoint (model + tokenizer)
    labels: list[str]
    best_epoch: int
    best_val_macro_f1: float
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0  # fine-tuning plus the pre-stages (MLM, contrastive, soft labels)
    stages: dict[str, Any] = field(default_factory=dict)
    resumed_from: dict[str, Any] | None = None  # the checkpoint's position when the run resumed
    world_size: int = 1


def class_weights(labels: list[str], label_names: list[str]) -> np.ndarray:
    """ "Balanced" weights n / (k * n_c): each class contributes equally to the loss."""
    counts = Counter(labels)
    n, k = len(labels), len(label_names)
    return np.array([n / (k * counts[name]) if counts[name] else 0.0 for name in label_names], np.float32)


def minority_oversample(
    texts: list[str],
    labels: list[str],
    min_examples: int,
    rng: random.Random,
    context: str | None = "banking77",
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
            extra_texts.append(make_noisy(rng.choice(rows), rng, "train", context))
            extra_labels.append(label)
    if extra_texts:
        log.info("minority oversampling: %d noisy copies added", len(extra_texts))
    return texts + extra_texts, labels + extra_labels


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
    from training.stages import adamw

    return adamw(parameter_groups(model, config), lr=config.learning_rate)


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


def process_state():
    """Accelerate's view of this process (rank, world size). Under ``torchrun`` on CPUs this
    joins the gloo process group: Accelerate only does that when told the run is CPU-only."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _precision(choice: str) -> str:
    """``auto``: bf16 on a GPU that supports it, fp16 on an older GPU, full precision on CPU."""
    import torch

    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _fingerprint(config: TrainConfig, labels: list[str], world_size: int, *datasets: TicketDataset) -> str:
    """What a checkpoint must match to be resumed: the config (bar thread count and checkpoint
    cadence), the labels, the number of processes and the exact rows."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in config.to_dict().items() if k not in ("threads", "save_steps")}
    digest.update(json.dumps([settings, labels, world_size], sort_keys=True, default=str).encode())
    for data in datasets:
        for text, label in zip(data.texts, data.labels, strict=True):
            digest.update(text.encode("utf-8") + b"\x1f" + label.encode("utf-8") + b"\x1e")
    return digest.hexdigest()


class _Checkpoint:
    """One resumable position in ``directory``.

    ``state-<step>/`` is ``Accelerator.save_state`` (model, optimizer, scheduler, RNG of every
    process), ``best-<epoch>.pt`` the best epoch's weights, and ``loop_state.json`` (written last,
    atomically) names both plus the loop's counters: a run stopped while saving still finds the
    previous complete checkpoint.
    """

    def __init__(self, directory: Path, fingerprint: str, accelerator) -> None:
        self.directory = directory
        self.fingerprint = fingerprint
        self.accelerator = accelerator

    def pending(self) -> dict[str, Any] | None:
        """The loop state of a checkpoint this run can resume, or None."""
        path = self.directory / STATE_FILE
        if not path.is_file():
            return None
        state = json.loads(path.read_text("utf-8"))
        if state.get("fingerprint") != self.fingerprint:
            return None
        return state

    def load(self) -> dict[str, Any] | None:
        """Restore model, optimizer, scheduler and RNG states; the loop state, or None."""
        state = self.pending()
        if state is None:
            if self._exists():
                log.warning(
                    "checkpoint in %s is from another config or data: starting afresh", self.directory
                )
            return None
        self.accelerator.load_state(str(self.directory / state["state_dir"]))
        log.info(
            "resuming from %s: epoch %d, %d batches done",
            self.directory,
            state["epoch"],
            state["batches_done"],
        )
        return state

    def best_weights(self, state: dict[str, Any]):
        import torch

        name = state.get("best_file")
        return torch.load(self.directory / name, weights_only=True) if name else None

    def save(self, loop: dict[str, Any], best_state, best_changed: bool, global_step: int) -> None:
        import torch

        accelerator = self.accelerator
        previous = json.loads((self.directory / STATE_FILE).read_text("utf-8")) if self._exists() else {}
        state_dir = f"state-{global_step}"
        accelerator.wait_for_everyone()
        accelerator.save_state(str(self.directory / state_dir))
        if accelerator.is_main_process:
            best_file = previous.get("best_file")
            if best_changed and best_state is not None:
                best_file = f"best-{loop['best_epoch']}.pt"
                torch.save(best_state, self.directory / best_file)
            record = {**loop, "fingerprint": self.fingerprint, "state_dir": state_dir, "best_file": best_file}
            tmp = self.directory / (STATE_FILE + ".tmp")
            tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            tmp.replace(self.directory / STATE_FILE)
            for old in self.directory.iterdir():  # what the new record no longer names
                if old.name.startswith(("state-", "best-")) and old.name not in (state_dir, best_file):
                    shutil.rmtree(old) if old.is_dir() else old.unlink()
        accelerator.wait_for_everyone()

    def _exists(self) -> bool:
        return (self.directory / STATE_FILE).is_file()


def _gather_logits(accelerator, model, encoder: TextEncoder, encoded, n_rows: int, batch_size: int):
    """Validation logits, each process scoring its share of the (length-sorted) batches."""
    import torch
    from accelerate.utils import gather_object

    batches = sorted_batches([len(ids) for ids in encoded["input_ids"]], batch_size)
    mine = batches[accelerator.process_index :: accelerator.num_processes]
    out = np.zeros((n_rows, model.config.num_labels), dtype=np.float32)
    model.eval()
    parts = []
    with torch.inference_mode(), accelerator.autocast():
        for idx in mine:
            logits = model(**encoder.collate(encoded, idx, accelerator.device)).logits
            parts.append((idx, logits.float().cpu().numpy()))
    if accelerator.num_processes > 1:
        parts = gather_object(parts)
    for idx, logits in parts:
        out[idx] = logits
    return out


def train(
    config: TrainConfig,
    train_data: TicketDataset,
    validation_data: TicketDataset,
    work_dir: str | Path,
    labels: list[str] | None = None,
    on_epoch_end: Callable[[int, Any], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    keep_checkpoint: bool = False,
    recipe: dict[str, Any] | None = None,
) -> TrainResult:
    """Fine-tune ``config.base_model`` and save the best epoch's model + tokenizer.

    Writes ``work_dir/hf_model/`` (``save_pretrained``), ``work_dir/train_metrics.jsonl`` (one
    JSON object per epoch) and ``work_dir/train_config.json`` (with ``recipe``, where the
    config's values came from: ``training.recipe``); checkpoints go to
    ``checkpoint_dir`` (default ``work_dir/checkpoint``), removed after a finished run unless
    ``keep_checkpoint``. Under ``torchrun`` every process calls this; only the main process
    writes the model, and every process gets the same result.

    The steps, in the order they draw random numbers (which a resumed run relies on): teachers
    -> accelerator -> model -> rows -> pre-stages -> loss -> optimizer -> resume -> epochs
    (noise and batches, one pass, validation, best epoch and early stopping, checkpoint) -> save.
    """
    import torch
    from accelerate.utils import set_seed

    work_dir = Path(work_dir)
    labels = _label_order(train_data, labels)
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    stages: dict[str, Any] = {}
    teacher_dirs = list(config.distill_teachers)
    if config.distill_seeds:
        teacher_dirs += _train_seed_teachers(
            config, train_data, validation_data, work_dir, labels, checkpoint_dir
        )
    accelerator = _accelerator(config)
    if accelerator.is_main_process:
        work_dir.mkdir(parents=True, exist_ok=True)
        config.save(work_dir / CONFIG_FILE, recipe)
    set_seed(config.seed)
    rng = random.Random(config.seed)

    model, tokenizer = _classifier(config, labels, accelerator.device)
    encoder = TextEncoder(tokenizer, model, config.max_length, config.truncation)
    rows = _model_rows(config, train_data, validation_data, labels, encoder, rng)
    checkpoint = _Checkpoint(
        Path(checkpoint_dir) if checkpoint_dir else work_dir / CHECKPOINT_SUBDIR,
        _fingerprint(config, labels, accelerator.num_processes, train_data, validation_data),
        accelerator,
    )
    if checkpoint.pending() is None:  # a resumed run gets the stages' result with the weights
        stages.update(
            _pre_stages(
                config, model, tokenizer, rows.train_texts, rows.y_train.tolist(), rng, accelerator.device
            )
        )
    loss_fn = _loss_function(config, rows, labels, teacher_dirs, accelerator.device, stages)
    loop = _prepare_loop(config, model, accelerator, encoder, loss_fn, checkpoint, len(rows.train_texts))
    state, best_state = _resume(checkpoint, accelerator.is_main_process)
    # torch's RNG as the checkpoint saved it, for a resume in the middle of an epoch (_train_epoch)
    resume_rng = torch.get_rng_state() if state.batches_done else None
    history_path = _start_history(work_dir / HISTORY_FILE, state.history, accelerator.is_main_process)
    _log_start(config, loop, len(rows.train_texts), len(labels))

    while not state.stopped and state.epoch <= config.epochs:
        epoch_start = time.perf_counter()
        batches = _epoch_batches(config, state.epoch, rows, encoder)
        loss = _train_epoch(config, loop, rows, batches, state, best_state, resume_rng)
        resume_rng = None
        train_seconds = time.perf_counter() - epoch_start
        val_f1, val_acc = _validate(config, loop, rows)
        record = _epoch_record(config, loop, state, batches, loss, (val_f1, val_acc))
        record["epoch_seconds"] = round(time.perf_counter() - epoch_start, 1)
        record["train_seconds"] = round(train_seconds, 1)
        state.history.append(record)
        if on_epoch_end is not None:  # e.g. tests inspecting the weights epoch by epoch
            on_epoch_end(state.epoch, loop.unwrapped)
        if accelerator.is_main_process:
            with history_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        improved, best_state = _end_epoch(config, loop, state, (val_f1, val_acc), best_state)
        checkpoint.save(state.as_record(), best_state, improved, state.global_step)

    model_dir = _save_best_model(loop, tokenizer, best_state, work_dir / MODEL_SUBDIR, keep_checkpoint)
    elapsed = time.perf_counter() - started
    log.info(
        "best epoch %d (val macro-F1 %.4f); %.0f s; saved to %s",
        state.best_epoch,
        state.best_f1,
        elapsed,
        model_dir,
    )
    accelerator.free_memory()
    return TrainResult(
        model_dir,
        list(labels),
        state.best_epoch,
        state.best_f1,
        state.history,
        elapsed,
        stages,
        state.resumed_from,
        accelerator.num_processes,
    )


# --- the steps of train(), in the order it takes them ------------------------------------------
def _label_order(train_data: TicketDataset, labels: list[str] | None) -> list[str]:
    """The model's label order: ``labels`` (every training label must be one), else the
    training split's sorted labels."""
    labels = labels or train_data.label_names
    unknown = sorted(set(train_data.labels) - set(labels))
    if unknown:
        raise ValueError(f"training labels not in the label list: {unknown[:10]}")
    return labels


def _accelerator(config: TrainConfig):
    """Accelerate's driver of this run: device, precision, accumulation, processes."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # The encoder is unfrozen/frozen between epochs with --freeze-encoder-epochs: DDP must then
    # accept parameters without gradients in some steps.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=config.freeze_encoder_epochs > 0)
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=_precision(config.mixed_precision),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        kwargs_handlers=[ddp],
        step_scheduler_with_optimizer=False,
    )


def _classifier(config: TrainConfig, labels: list[str], device):
    """The base encoder with a fresh head for ``labels``, on ``device`` (a GPU when the machine
    has one, e.g. a SageMaker ml.g5 job), and its tokenizer."""
    model, tokenizer = load_model_and_tokenizer(
        config.base_model, labels, config.head, config.head_hidden, config.head_dropout
    )
    if config.loss == "ovr":
        _init_ovr_bias(model, len(labels))
    model.to(device)
    return model, tokenizer


@dataclass
class _Rows:
    """The training and validation rows as the model sees them."""

    raw_train: list[str]  # training texts (minority copies added) before preprocessing: noise wraps these
    train_labels: list[str]
    train_texts: list[str]  # ... preprocessed: the clean input of every epoch
    y_train: Any  # int64 tensor of label indices
    val_texts: list[str]  # preprocessed
    val_encoded: dict[str, list[list[int]]]
    y_val: list[int]  # -1 for a validation label the model does not have


def _model_rows(
    config: TrainConfig,
    train_data: TicketDataset,
    validation_data: TicketDataset,
    labels: list[str],
    encoder: TextEncoder,
    rng: random.Random,
) -> _Rows:
    import torch

    label_index = {label: i for i, label in enumerate(labels)}
    raw_train, train_labels = minority_oversample(
        list(train_data.texts),
        list(train_data.labels),
        config.minority_min_examples,
        rng,
        config.noise_context_arg,
    )
    train_texts = preprocess_batch(raw_train, config.preprocessing)
    y_train = torch.tensor([label_index[label] for label in train_labels], dtype=torch.long)
    val_texts = preprocess_batch(validation_data.texts, config.preprocessing)
    return _Rows(
        raw_train,
        train_labels,
        train_texts,
        y_train,
        val_texts,
        encoder.encode(val_texts),
        [label_index.get(label, -1) for label in validation_data.labels],
    )


def _loss_function(
    config: TrainConfig, rows: _Rows, labels: list[str], teacher_dirs: list, device, stages: dict[str, Any]
) -> _Loss:
    """The loss with its class weights and, with teachers, their soft labels (which adds the
    ``distill`` entry to ``stages``)."""
    import torch

    weight = None
    if config.class_weights:
        weight = torch.from_numpy(class_weights(rows.train_labels, labels)).to(device)
    soft_targets = None
    if teacher_dirs:
        from training.stages import teacher_probabilities

        t0 = time.perf_counter()
        soft_targets = torch.from_numpy(
            teacher_probabilities(
                teacher_dirs,
                rows.train_texts,
                labels,
                temperature=config.distill_temperature,
                max_length=config.max_length,
                batch_size=config.eval_batch_size,
                device=device,
            )
        ).to(device)
        stages["distill"] = {"teachers": [str(t) for t in teacher_dirs], "seconds": _since(t0)}
    return _Loss(config, len(labels), weight, soft_targets)


@dataclass
class _Loop:
    """What the epochs run on, after ``accelerator.prepare``."""

    accelerator: Any
    model: Any  # wrapped for data parallelism under torchrun
    unwrapped: Any
    optimizer: Any
    scheduler: Any
    loss_fn: _Loss
    encoder: TextEncoder
    checkpoint: _Checkpoint
    steps_per_epoch: int


def _prepare_loop(
    config: TrainConfig, model, accelerator, encoder: TextEncoder, loss_fn: _Loss, checkpoint, n_rows: int
) -> _Loop:
    """Optimizer and linear warm-up schedule over the whole run, prepared by Accelerate; the
    scheduler is registered so that checkpoints carry it."""
    from transformers import get_linear_schedule_with_warmup

    # Frozen word embeddings are left out of the optimizer (parameter_groups skips them).
    _set_encoder_trainable(model, True, config.freeze_embeddings)
    optimizer = _optimizer(model, config)
    world = accelerator.num_processes
    batches_per_epoch = math.ceil(math.ceil(n_rows / config.batch_size) / world)  # per process
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    unwrapped = accelerator.unwrap_model(model)
    return _Loop(
        accelerator, model, unwrapped, optimizer, scheduler, loss_fn, encoder, checkpoint, steps_per_epoch
    )


@dataclass
class _LoopState:
    """Where the epoch loop stands: what a checkpoint saves (``loop_state.json``) and a resumed
    run restores."""

    epoch: int = 1  # the epoch to run next
    batches_done: int = 0  # of that epoch (a checkpoint taken mid-epoch)
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_f1: float = -1.0
    best_epoch: int = 0
    stale: int = 0  # epochs since the best one
    stopped: bool = False
    resumed_from: dict[str, Any] | None = None

    def as_record(self, epoch: int | None = None, batches_done: int | None = None) -> dict[str, Any]:
        """The checkpoint's loop record; mid-epoch, at ``epoch`` after ``batches_done`` batches."""
        return {
            "epoch": self.epoch if epoch is None else epoch,
            "batches_done": self.batches_done if batches_done is None else batches_done,
            "global_step": self.global_step,
            "history": self.history,
            "best_f1": self.best_f1,
            "best_epoch": self.best_epoch,
            "stale": self.stale,
            "stopped": self.stopped,
        }


def _resume(checkpoint: _Checkpoint, main: bool) -> tuple[_LoopState, Any]:
    """The loop state (and, on the main process, the best weights so far) of the checkpoint this
    run resumes, or a fresh start. Restores model, optimizer, scheduler and RNG states."""
    resumed = checkpoint.load()
    if not resumed:
        return _LoopState(), None
    state = _LoopState(
        epoch=resumed["epoch"],
        batches_done=resumed["batches_done"],
        global_step=resumed["global_step"],
        history=list(resumed["history"]),
        best_f1=resumed["best_f1"],
        best_epoch=resumed["best_epoch"],
        stale=resumed["stale"],
        stopped=bool(resumed["stopped"]),
        resumed_from={k: resumed[k] for k in ("epoch", "batches_done", "global_step")},
    )
    return state, checkpoint.best_weights(resumed) if main else None


def _start_history(path: Path, history: list[dict[str, Any]], main: bool) -> Path:
    """``train_metrics.jsonl`` with the epochs done so far (a resumed run's); one line per epoch follows."""
    if main:
        path.write_text("".join(json.dumps(r) + "\n" for r in history), encoding="utf-8")
    return path


def _log_start(config: TrainConfig, loop: _Loop, n_rows: int, n_labels: int) -> None:
    log.info(
        "fine-tuning %s on %d rows (%d labels), %d epochs x %d optimizer steps, %d process(es), "
        "batch %d x %d accumulation, precision %s",
        config.base_model,
        n_rows,
        n_labels,
        config.epochs,
        loop.steps_per_epoch,
        loop.accelerator.num_processes,
        config.batch_size,
        config.gradient_accumulation_steps,
        loop.accelerator.mixed_precision,
    )


@dataclass
class _EpochBatches:
    """One epoch's inputs: the rows (a share wrapped in fresh noise), tokenized, in batches."""

    encoded: dict[str, list[list[int]]]
    lengths: list[int]
    batches: list[list[int]]
    noisy_rows: int


def _epoch_batches(config: TrainConfig, epoch: int, rows: _Rows, encoder: TextEncoder) -> _EpochBatches:
    # Each epoch's noise and batch order come from its own seed: a resumed run rebuilds
    # exactly the batches the interrupted one was going through.
    epoch_rng = random.Random(f"{config.seed}:epoch:{epoch}")
    texts = list(rows.train_texts)
    n_noisy = 0
    if config.noisy_augmentation > 0:
        # Fresh noise every epoch: the model sees each query both clean and wrapped.
        chosen = [i for i in range(len(texts)) if epoch_rng.random() < config.noisy_augmentation]
        noisy = preprocess_batch(
            [
                make_noisy(rows.raw_train[i], epoch_rng, _pool(config, epoch_rng), config.noise_context_arg)
                for i in chosen
            ],
            config.preprocessing,
        )
        for i, text in zip(chosen, noisy, strict=True):
            texts[i] = text
        n_noisy = len(chosen)
    encoded = encoder.encode(texts)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    batches = length_grouped_batches(lengths, config.batch_size, config.length_group_batches, epoch_rng)
    return _EpochBatches(encoded, lengths, batches, n_noisy)


def _train_epoch(
    config: TrainConfig,
    loop: _Loop,
    rows: _Rows,
    epoch: _EpochBatches,
    state: _LoopState,
    best_state,
    resume_rng,
) -> tuple[float, float]:
    """One pass over ``epoch``'s batches (skipping those a mid-epoch checkpoint already did),
    with a checkpoint every ``save_steps`` optimizer steps. Returns (sum of loss x rows, rows)
    over all processes; ``state.global_step`` counts the optimizer steps."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    accelerator, model, main = loop.accelerator, loop.model, loop.accelerator.is_main_process
    device = accelerator.device

    def collate(idx: list[int]) -> dict[str, Any]:
        batch = loop.encoder.collate(epoch.encoded, idx)
        batch["labels"] = rows.y_train[idx]
        batch["rows"] = torch.tensor(idx, dtype=torch.long)
        return batch

    loader = accelerator.prepare_data_loader(
        DataLoader(range(len(epoch.lengths)), batch_sampler=epoch.batches, collate_fn=collate)
    )
    n_batches = len(loader)
    skip = state.batches_done
    if skip:
        loader = accelerator.skip_first_batches(loader, skip)
    frozen = state.epoch <= config.freeze_encoder_epochs
    _set_encoder_trainable(loop.unwrapped, not frozen, config.freeze_embeddings)
    model.train()
    total_loss = torch.zeros(2, dtype=torch.float64, device=device)  # sum of loss x rows, rows
    done = skip
    # one bar, the main process's; TQDM_DISABLE=1 silences it
    quiet = {} if main else {"disable": True}
    progress = tqdm(loader, desc=f"epoch {state.epoch}/{config.epochs}", unit="batch", leave=False, **quiet)
    for batch in progress:
        if resume_rng is not None:
            # The uninterrupted run drew the loader's base seed from torch's generator at the
            # start of this epoch, before the checkpoint saved the RNG state; the resumed loader
            # has just drawn it again. Put the saved state back, or every dropout mask after
            # the resume point would differ from the uninterrupted run's.
            torch.set_rng_state(resume_rng)
            resume_rng = None
        batch_rows, y = batch.pop("rows"), batch.pop("labels")
        with accelerator.accumulate(model):
            logits = model(**batch).logits
            loss = loop.loss_fn(logits.float(), y, batch_rows)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            loop.optimizer.step()
            if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                loop.scheduler.step()
            loop.optimizer.zero_grad(set_to_none=True)
        done += 1
        total_loss += torch.tensor(
            [loss.item() * len(batch_rows), len(batch_rows)], dtype=torch.float64, device=device
        )
        if accelerator.sync_gradients:
            state.global_step += 1
            if config.save_steps and state.global_step % config.save_steps == 0 and done < n_batches:
                loop.checkpoint.save(state.as_record(state.epoch, done), best_state, False, state.global_step)
        if main:
            progress.set_postfix(loss=f"{total_loss[0].item() / max(1.0, total_loss[1].item()):.4f}")
    progress.close()
    state.batches_done = 0
    loss_sum, seen = accelerator.reduce(total_loss, reduction="sum").tolist()
    return loss_sum, seen


def _validate(config: TrainConfig, loop: _Loop, rows: _Rows) -> tuple[float, float]:
    """Validation macro-F1 and accuracy of the model as it stands."""
    val_logits = _gather_logits(
        loop.accelerator,
        loop.unwrapped,
        loop.encoder,
        rows.val_encoded,
        len(rows.val_texts),
        config.eval_batch_size,
    )
    return _macro_f1(rows.y_val, val_logits.argmax(axis=1))


def _epoch_record(
    config: TrainConfig,
    loop: _Loop,
    state: _LoopState,
    batches: _EpochBatches,
    loss: tuple[float, float],
    scores: tuple[float, float],
) -> dict[str, Any]:
    """The epoch's line of ``train_metrics.jsonl`` (its timings are added by the caller)."""
    loss_sum, seen = loss
    return {
        "epoch": state.epoch,
        "train_loss": round(loss_sum / max(1.0, seen), 5),
        "val_macro_f1": round(scores[0], 5),
        "val_accuracy": round(scores[1], 5),
        "lr": loop.scheduler.get_last_lr()[0],
        "optimizer_steps": state.global_step,
        "encoder_frozen": state.epoch <= config.freeze_encoder_epochs,
        "noisy_rows": batches.noisy_rows,
        "mean_tokens": round(float(np.mean(batches.lengths)), 2),
    }


def _end_epoch(
    config: TrainConfig, loop: _Loop, state: _LoopState, scores: tuple[float, float], best_state
) -> tuple[bool, Any]:
    """Log the epoch; keep the weights of a better epoch (main process), count the epochs
    without one and stop after ``early_stopping_patience`` of them; move on to the next epoch.
    Returns (improved, the best weights so far)."""
    main = loop.accelerator.is_main_process
    val_f1, val_acc = scores
    record = state.history[-1]
    improved = val_f1 > state.best_f1
    # one line per epoch, the main process's: the SageMaker launcher's metrics parse it
    (log.info if main else log.debug)(
        "epoch %d/%d: loss %.4f, val macro-F1 %.4f, val acc %.4f, %.0f s%s",
        state.epoch,
        config.epochs,
        record["train_loss"],
        val_f1,
        val_acc,
        record["epoch_seconds"],
        " (best)" if improved else "",
    )
    if improved:
        state.best_f1, state.best_epoch, state.stale = val_f1, state.epoch, 0
        if main:
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in loop.unwrapped.state_dict().items()}
    else:
        state.stale += 1
        if config.early_stopping_patience and state.stale >= config.early_stopping_patience:
            log.info("early stopping: no improvement for %d epoch(s)", state.stale)
            state.stopped = True
    state.epoch += 1
    return improved, best_state


def _save_best_model(loop: _Loop, tokenizer, best_state, model_dir: Path, keep_checkpoint: bool) -> Path:
    """The best epoch's weights and the tokenizer as ``save_pretrained`` (main process); the
    checkpoint removed unless ``keep_checkpoint``."""
    accelerator, unwrapped = loop.accelerator, loop.unwrapped
    accelerator.wait_for_everyone()
    _set_encoder_trainable(unwrapped, True)
    if accelerator.is_main_process:
        if best_state is not None:
            unwrapped.load_state_dict(best_state)
        unwrapped.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        if not keep_checkpoint:
            shutil.rmtree(loop.checkpoint.directory, ignore_errors=True)
    accelerator.wait_for_everyone()
    return model_dir


def _pool(config: TrainConfig, rng: random.Random) -> str:
    """The noise pool of one augmented row (one pool: no draw, so one-pool runs stay as they were)."""
    pools = config.noise_pools
    return pools[0] if len(pools) == 1 else rng.choice(pools)


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
                        [make_noisy(stage_texts[i], rng, _pool(config, rng), config.noise_context_arg)],
                        config.preprocessing,
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
    config: TrainConfig,
    train_data: TicketDataset,
    validation_data: TicketDataset,
    work_dir: Path,
    labels,
    checkpoint_dir: str | Path | None,
) -> list[Path]:
    """Train one teacher per ``distill_seeds`` seed (same config, no distillation)."""
    teachers = []
    for seed in config.distill_seeds:
        teacher_config = dataclasses.replace(config, seed=seed, distill_seeds=[], distill_teachers=[])
        log.info("training distillation teacher with seed %d", seed)
        result = train(
            teacher_config,
            train_data,
            validation_data,
            work_dir / "teachers" / f"seed-{seed}",
            labels,
            checkpoint_dir=Path(checkpoint_dir) / f"teacher-seed-{seed}" if checkpoint_dir else None,
        )
        teachers.append(result.model_dir)
    return teachers
