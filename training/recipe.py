"""The recipe: a training config that fits the data it is given, and says where each value came from.

``--preset`` (``python -m training train``) picks where the hyperparameters come from:

* ``banking77``, the default for the bundled ``data/banking77/train.csv``: the project's measured
  default, exactly (``training/presets/banking77.toml``, which equals ``TrainConfig``'s defaults;
  another base-model family takes its published preset, as before). Nothing reads the data.
* ``auto``, the default for any other file: the base model's family preset
  (``training.config.PRESETS``: learning rates, head, warm-up per family), then rules that read
  the training split (:func:`auto_rules`): epochs from its size, class weights from its
  imbalance, noise augmentation off (the only validated noise is Banking77's), the review policy
  for data nobody here has tuned on. Each rule is a function with its reason in its docstring.
* a ``.toml`` or ``.json`` file: ``base = "auto"`` (default) or ``"banking77"``, then the
  file's ``[train]``, ``[review]`` and ``[cascade]`` values (``training/presets/banking77.toml``
  is an example; ``[cascade]``: :class:`CascadePolicy`, an ensemble's confidence cascade).

Options given on the command line win over all of these. :func:`resolve_recipe` returns the
:class:`Recipe`: the ``TrainConfig``, the :class:`ReviewPolicy`, and one :class:`Choice` per
value that a preset, a rule, a file or the command line set, with its source and reason. The
pipeline logs it, writes it into ``train_config.json`` (``"recipe"``) and into the summary.

The maximum length: :func:`choose_max_length` is the one place that picks it from the data's
token lengths (``DataProfile.token_lengths``: :func:`training.long_text.max_length_rule`), and
:func:`choose_truncation` what fine-tuning reads of longer tickets.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from training.config import DEFAULT_BASE_MODEL, PRESETS, TrainConfig, model_family
from training.data import DEFAULT_DATA
from triage_core.preprocessing import PreprocessConfig

PRESET_DIR = Path(__file__).resolve().parent / "presets"
NAMED_PRESETS = ("banking77", "auto")

# --- the auto rules' constants (docs/training.md, "Recipe", has the measurements) ---------------
# Optimizer steps the Banking77 default takes (7,999 rows / batch 32 = 250 steps x 4 epochs),
# the budget its validation curve was chosen at; a smaller file gets more epochs to reach it.
TARGET_OPTIMIZER_STEPS = 1000
MAX_AUTO_EPOCHS = 15
# Fine-tuning minutes the epochs rule aims to stay under on 2 CPU cores (the goal: a few
# thousand tickets trained, exported and evaluated within about 30 minutes).
FINE_TUNE_MINUTES = 20.0
# Seconds per training row per epoch of all-MiniLM-L6-v2 on 2 CPU cores, by the mean number of
# tokens a row has after truncation, from whole runs on this machine: 16 tokens, Banking77's
# default fine-tune (489 s for 4 epochs of 7,999 rows, validation included); 64 and ~200 tokens,
# issue #20's runs on 1,872 training rows of long complaints (4.3 and 17 minutes for 4 epochs, the
# whole pipeline, so an upper bound); 512, the 200-token cost x 512/200 x 1.3 for attention's
# quadratic part (not measured). Linear in between.
SECONDS_PER_ROW = {16: 489 / (4 * 7999), 64: 4.3 * 60 / (4 * 1872), 200: 17 * 60 / (4 * 1872)}
SECONDS_PER_ROW[512] = SECONDS_PER_ROW[200] * 512 / 200 * 1.3
# Class weights ("balanced", n / (k * n_c)) when the largest label has more than this many times
# the rows of the smallest in the training split.
CLASS_WEIGHT_MIN_RATIO = 1.5
# Early stopping after this many epochs without a better validation score when the rule gives
# many short epochs: one noisy validation epoch must not end a long schedule.
AUTO_EARLY_STOPPING_PATIENCE = 3


@dataclass(frozen=True)
class ReviewPolicy:
    """How the review threshold is chosen on the validation split (training.evaluate.review_curve):
    the lowest threshold whose auto-accepted tickets reach ``target_accuracy``, sending at most
    ``max_review_share`` of the tickets to review (1.0 = no ceiling)."""

    target_accuracy: float = 0.98
    max_review_share: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.target_accuracy <= 1.0:
            raise ValueError(f"review target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if not 0.0 <= self.max_review_share <= 1.0:
            raise ValueError(f"review max_review_share must be in [0, 1], got {self.max_review_share}")


AUTO_REVIEW = ReviewPolicy(target_accuracy=0.95, max_review_share=0.5)


@dataclass(frozen=True)
class CascadePolicy:
    """How the cascade's bar is chosen (preset ``[cascade]``, ``--cascade*`` options).

    ``max_f1_loss``: the macro-F1 (0-1) a cascade may lose against the ensemble, clean and noisy
    (issue #23: 0.5 points). ``margin``: kept out of that budget on validation, so a bar that
    loses ``max_f1_loss - margin`` there still has room on unseen tickets (one validation ticket
    of a 77-label, 1,000-ticket split moves macro-F1 by about 0.1 point).
    ``max_review_increase``: the share of tickets (0-1) the cascade may add to the review queue on
    the clean validation split, each side at the threshold the review policy would choose for its
    scores (the TF-IDF model's scores are less peaked than the ensemble's: the lowest bar within
    the F1 budget sent 26 % to review against 16 %; 1.0: the review queue is not considered)."""

    enabled: bool = True
    max_f1_loss: float = 0.005
    margin: float = 0.0025
    max_review_increase: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin <= self.max_f1_loss <= 1.0:
            raise ValueError(
                f"cascade needs 0 <= margin <= max_f1_loss <= 1, got {self.margin} and {self.max_f1_loss}"
            )
        if not 0.0 <= self.max_review_increase <= 1.0:
            raise ValueError(f"cascade max_review_increase must be in [0, 1], got {self.max_review_increase}")

    @property
    def allowed_loss(self) -> float:
        return self.max_f1_loss - self.margin


@dataclass(frozen=True)
class Choice:
    """One value of the recipe: what it is, who set it, and why."""

    name: str
    value: Any
    source: str  # "command line", "preset file <path>", "banking77 preset", "family preset <f>", "rule"
    reason: str = ""


@dataclass(frozen=True)
class DataProfile:
    """What the rules read from the training split."""

    rows: int
    support: dict[str, int]
    # Token counts of the preprocessed training texts with the base model's tokenizer (special
    # tokens included, untruncated); None when not measured.
    token_lengths: tuple[int, ...] | None = None

    @property
    def labels(self) -> int:
        return len(self.support)

    @property
    def imbalance(self) -> float:
        """Rows of the largest label / rows of the smallest."""
        return max(self.support.values()) / max(1, min(self.support.values()))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "training_rows": self.rows,
            "labels": self.labels,
            "largest_label_rows": max(self.support.values()),
            "smallest_label_rows": min(self.support.values()),
            "imbalance": round(self.imbalance, 2),
        }
        if self.token_lengths:
            ordered = sorted(self.token_lengths)
            out["tokens"] = {
                "median": ordered[len(ordered) // 2],
                "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
                "max": ordered[-1],
            }
        return out


@dataclass
class Recipe:
    """The resolved recipe: the training config, the review policy and where each value came from."""

    preset: str
    config: TrainConfig
    review: ReviewPolicy
    choices: list[Choice] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    cascade: CascadePolicy = field(default_factory=lambda: CascadePolicy())

    def to_dict(self) -> dict[str, Any]:
        """The recipe as stored in ``train_config.json`` and the summary (the config beside it)."""
        return {
            "preset": self.preset,
            "review": asdict(self.review),
            "cascade": asdict(self.cascade),
            "data": self.profile,
            "choices": [asdict(c) for c in self.choices],
        }

    def describe(self) -> str:
        """A few readable lines: the values that were set, by whom, and why."""
        lines = [f"recipe (preset {self.preset}):"]
        for c in self.choices:
            reason = f": {c.reason}" if c.reason else ""
            if c.name == "*":
                lines.append(f"  every value not listed below: {c.source}{reason}")
            else:
                lines.append(f"  {c.name} = {c.value!r}  [{c.source}{reason}]")
        lines.append(
            f"  review: target accuracy {self.review.target_accuracy:g}, "
            f"at most {self.review.max_review_share:.0%} of tickets to review"
        )
        cascade = self.cascade
        lines.append(
            f"  cascade (an ensemble's): at most {cascade.max_f1_loss:g} macro-F1 lost, "
            f"{cascade.margin:g} of it kept as margin"
            if cascade.enabled
            else "  cascade: off"
        )
        return "\n".join(lines)


class PresetError(ValueError):
    """A preset name or file that cannot be used; the message says why."""


# --- the preset: a name or a file --------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A preset as read, before the data: its base (``auto`` or ``banking77``) and pinned values."""

    name: str  # "banking77", "auto" or the file's path
    base: str  # "banking77" or "auto"
    train: dict[str, Any] = field(default_factory=dict)
    review: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    cascade: dict[str, Any] = field(default_factory=dict)  # how choices from this preset are labelled


def default_preset(data: Path) -> str:
    """``banking77`` for the bundled Banking77 file, ``auto`` for any other data."""
    try:
        bundled = Path(data).resolve() == DEFAULT_DATA.resolve()
    except OSError:
        bundled = False
    return "banking77" if bundled else "auto"


def load_preset(name_or_path: str) -> Preset:
    """``banking77``, ``auto`` or a ``.toml``/``.json`` preset file."""
    if name_or_path in NAMED_PRESETS:
        return Preset(name_or_path, name_or_path, source=f"{name_or_path} preset")
    path = Path(name_or_path)
    if path.suffix.lower() not in (".toml", ".json"):
        raise PresetError(
            f"--preset {name_or_path!r}: use {' or '.join(NAMED_PRESETS)}, or a .toml/.json preset file"
        )
    return _read_preset_file(path)


def banking77_values() -> Preset:
    """``training/presets/banking77.toml``: the measured default's values, all of them."""
    return _read_preset_file(PRESET_DIR / "banking77.toml")


_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)} - {"preprocessing"}
_REVIEW_FIELDS = {f.name for f in fields(ReviewPolicy)}
_CASCADE_FIELDS = {f.name for f in fields(CascadePolicy)}


def _read_preset_file(path: Path) -> Preset:
    try:
        text = path.read_text("utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except FileNotFoundError:
        raise PresetError(f"preset file {path}: no such file") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PresetError(f"preset file {path}: cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise PresetError(f"preset file {path}: expected a table/object at the top")
    unknown = sorted(set(data) - {"description", "base", "train", "review", "cascade"})
    if unknown:
        raise PresetError(
            f"preset file {path}: unknown key(s) {unknown}; use base, [train], [review] and [cascade]"
        )
    base = data.get("base", "auto")
    if base not in NAMED_PRESETS:
        raise PresetError(f"preset file {path}: base must be one of {list(NAMED_PRESETS)}, got {base!r}")
    train, review = dict(data.get("train", {})), dict(data.get("review", {}))
    cascade = dict(data.get("cascade", {}))
    if "preprocessing" in train:
        raise PresetError(
            f"preset file {path}: preprocessing is set with command-line options (--mask-pii, "
            "--extract-request, --emojis), which apply before the data is read"
        )
    for section, given, known in (
        ("train", train, _TRAIN_FIELDS),
        ("review", review, _REVIEW_FIELDS),
        ("cascade", cascade, _CASCADE_FIELDS),
    ):
        bad = sorted(set(given) - known)
        if bad:
            raise PresetError(f"preset file {path}: unknown [{section}] key(s) {bad}; known: {sorted(known)}")
    return Preset(str(path), base, train, review, source=f"preset file {path}", cascade=cascade)


def profile_training_data(train, base_model: str, preprocessing: PreprocessConfig) -> DataProfile:
    """The training split as the rules see it: rows, per-label support and token lengths (the
    base model's tokenizer on the preprocessed texts, untruncated)."""
    from transformers import AutoTokenizer

    from training.config import resolve_base_model
    from triage_core.preprocessing import preprocess_batch

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(base_model), use_fast=True)
    texts = preprocess_batch(list(train.texts), preprocessing)
    encoded = tokenizer(texts, truncation=False, verbose=False)["input_ids"] if texts else []
    lengths = [len(ids) for ids in encoded]
    return DataProfile(len(train.texts), train.support(), tuple(lengths))


# --- resolution --------------------------------------------------------------------------------
def resolve_recipe(
    preset: Preset,
    base_model: str | None,
    given: dict[str, Any],
    profile: DataProfile | None = None,
    review_given: dict[str, Any] | None = None,
    preprocessing: PreprocessConfig | None = None,
    cascade_given: dict[str, Any] | None = None,
) -> Recipe:
    """The recipe, each layer over the one before: the base values (Banking77's, or the family
    preset's) -> the auto rules (``auto`` base, given a data profile) -> the preset file's
    values -> the command line's (``given``, ``review_given``)."""
    review_given = review_given or {}
    base_model = base_model or preset.train.get("base_model") or DEFAULT_BASE_MODEL
    values, review, choices = _base_values(preset.base, base_model)
    pinned = {k: v for k, v in preset.train.items() if k != "base_model"}
    if preset.base == "auto" and profile is not None:
        # the rules see the pinned values (an explicit --max-length decides the epoch's cost)
        try:
            start = TrainConfig(**{**values, **pinned, **given, "base_model": base_model})
        except (TypeError, ValueError) as exc:
            raise PresetError(str(exc)) from None
        for name, value, reason in auto_rules(start, profile, {**pinned, **given}):
            values[name] = value
            choices.append(Choice(name, value, "rule", reason))
    for layer, source in ((pinned, preset.source), (given, "command line")):
        for name, value in layer.items():
            values[name] = value
            choices.append(Choice(name, value, source))
    for layer, source in ((preset.review, preset.source), (review_given, "command line")):
        for name, value in layer.items():
            review[name] = value
            choices.append(Choice(f"review.{name}", value, source))
    cascade: dict[str, Any] = {}
    base_cascade = banking77_values().cascade if preset.base == "banking77" else {}
    for layer, source in (
        (base_cascade, "banking77 preset"),
        (preset.cascade, preset.source),
        (cascade_given or {}, "command line"),
    ):
        for name, value in layer.items():
            cascade[name] = value
            choices.append(Choice(f"cascade.{name}", value, source))
    if preprocessing is not None:
        values["preprocessing"] = preprocessing
    try:
        config = TrainConfig(**{**values, "base_model": base_model})
        policy = ReviewPolicy(**review)
        cascade_policy = CascadePolicy(**cascade)
    except (TypeError, ValueError) as exc:
        raise PresetError(str(exc)) from None
    return Recipe(preset.name, config, policy, choices, profile.summary() if profile else {}, cascade_policy)


def _base_values(base: str, base_model: str) -> tuple[dict[str, Any], dict[str, Any], list[Choice]]:
    """The first layer: Banking77's values (MiniLM) or the base model family's published preset;
    the review policy of the base."""
    family = model_family(base_model)
    if base == "banking77" and family == "minilm":
        banking77 = banking77_values()
        values = {k: v for k, v in banking77.train.items() if k != "base_model"}
        choice = Choice("*", "Banking77 values", "banking77 preset", "training/presets/banking77.toml")
        return values, dict(banking77.review), [choice]
    values = dict(PRESETS[family].values)
    choices = [Choice("*", f"{family} values", f"family preset {family}", PRESETS[family].source)]
    if base == "banking77":
        return values, dict(banking77_values().review), choices
    choices.append(
        Choice("review", asdict(AUTO_REVIEW), "rule", "a starting point for new data: set your own")
    )
    return values, asdict(AUTO_REVIEW), choices


# --- the auto rules ----------------------------------------------------------------------------
Rule = Callable[[TrainConfig, DataProfile], tuple[Any, str]]


def auto_rules(
    config: TrainConfig, profile: DataProfile, pinned: dict[str, Any]
) -> list[tuple[str, Any, str]]:
    """(field, value, reason) for every rule whose field is not pinned by a file or the command
    line, applied in order (a later rule sees the earlier ones' values)."""
    import dataclasses

    out = []
    rules: list[tuple[str, Rule]] = [
        ("max_length", choose_max_length),
        ("truncation", choose_truncation),
        ("epochs", choose_epochs),
        ("early_stopping_patience", choose_patience),
        ("class_weights", choose_class_weights),
        ("noisy_augmentation", choose_noise),
        ("noise_context", choose_noise_context),
    ]
    for name, rule in rules:
        if name in pinned:
            continue
        value, reason = rule(config, profile)
        config = dataclasses.replace(config, **{name: value})
        out.append((name, value, reason))
    return out


def choose_max_length(config: TrainConfig, profile: DataProfile) -> tuple[int, str]:
    """The maximum length from the data's token lengths, up to the model's limit
    (:func:`training.long_text.max_length_rule`)."""
    from training.long_text import max_length_rule

    return max_length_rule(config, profile.token_lengths)


def choose_truncation(config: TrainConfig, profile: DataProfile) -> tuple[str, str]:
    """Fine-tuning reads head + tail when tickets are long (:func:`training.long_text.truncation_rule`)."""
    from training.long_text import truncation_rule

    return truncation_rule(config, profile.token_lengths)


def estimated_epoch_seconds(config: TrainConfig, profile: DataProfile) -> float:
    """Seconds one epoch of fine-tuning takes on 2 CPU cores (:data:`SECONDS_PER_ROW`): rows x the
    cost of a row of the mean truncated token length, scaled for a bigger encoder by its layers x
    hidden size squared relative to MiniLM-L6's (6 x 384^2). A rough guide for the budget, not a
    promise: the machine's load moves it by a factor of two."""
    if profile.token_lengths:
        mean_tokens = sum(min(n, config.max_length) for n in profile.token_lengths) / len(
            profile.token_lengths
        )
    else:
        mean_tokens = 16.0
    points = sorted(SECONDS_PER_ROW)
    mean_tokens = min(max(mean_tokens, points[0]), points[-1])
    lo = max(p for p in points if p <= mean_tokens)
    hi = min(p for p in points if p >= mean_tokens)
    weight = 0.0 if hi == lo else (mean_tokens - lo) / (hi - lo)
    per_row = SECONDS_PER_ROW[lo] * (1 - weight) + SECONDS_PER_ROW[hi] * weight
    return profile.rows * per_row * _model_size_factor(config.base_model)


def _model_size_factor(base_model: str) -> float:
    from training.config import resolve_base_model

    config_file = Path(resolve_base_model(base_model)) / "config.json"
    try:
        config = json.loads(config_file.read_text("utf-8"))
    except (OSError, ValueError):
        return 1.0 if model_family(base_model) == "minilm" else 8.0  # BERT-base: 12 x 768^2
    layers = config.get("num_hidden_layers") or config.get("n_layers") or 6
    hidden = config.get("hidden_size") or config.get("dim") or 384
    return max(0.05, layers * hidden**2 / (6 * 384**2))


def choose_epochs(config: TrainConfig, profile: DataProfile) -> tuple[int, str]:
    """Enough epochs for :data:`TARGET_OPTIMIZER_STEPS` optimizer steps (the Banking77 default's
    budget; the issue's 2,340-row file got 236 steps and stopped with the training loss at 1.4),
    at least the family's epochs, at most :data:`MAX_AUTO_EPOCHS`, and no more than fit
    :data:`FINE_TUNE_MINUTES` by :func:`estimated_epoch_seconds` (never below 2)."""
    steps_per_epoch = max(
        1, math.ceil(profile.rows / (config.batch_size * config.gradient_accumulation_steps))
    )
    wanted = min(MAX_AUTO_EPOCHS, max(config.epochs, math.ceil(TARGET_OPTIMIZER_STEPS / steps_per_epoch)))
    epoch_seconds = estimated_epoch_seconds(config, profile)
    fit = max(2, int(FINE_TUNE_MINUTES * 60 // max(epoch_seconds, 1e-9)))
    epochs = min(wanted, fit)
    reason = (
        f"{profile.rows} training rows = {steps_per_epoch} optimizer steps per epoch; "
        f"{TARGET_OPTIMIZER_STEPS} steps wanted -> {wanted} epochs "
        f"(between {config.epochs} and {MAX_AUTO_EPOCHS})"
    )
    if epochs < wanted:
        reason += (
            f"; cut to {epochs}: an epoch takes about {epoch_seconds / 60:.1f} min on 2 CPU cores and the "
            f"budget is {FINE_TUNE_MINUTES:g} min (more cores or a GPU: pass --epochs)"
        )
    return epochs, reason


def choose_patience(config: TrainConfig, profile: DataProfile) -> tuple[int, str]:
    """More patience for a long schedule: one noisy validation epoch must not end it."""
    if config.epochs > 6 and config.early_stopping_patience:
        patience = max(config.early_stopping_patience, AUTO_EARLY_STOPPING_PATIENCE)
        return patience, f"{config.epochs} epochs: stop after {patience} without a better validation score"
    return config.early_stopping_patience, "the family preset's patience"


def choose_class_weights(config: TrainConfig, profile: DataProfile) -> tuple[bool, str]:
    """Balanced class weights when the labels are imbalanced beyond :data:`CLASS_WEIGHT_MIN_RATIO`:
    each label then weighs the same in the loss, which is what macro-F1 scores."""
    on = profile.imbalance > CLASS_WEIGHT_MIN_RATIO
    return on, (
        f"largest/smallest label = {max(profile.support.values())}/{min(profile.support.values())} "
        f"= {profile.imbalance:.1f} {'>' if on else '<='} {CLASS_WEIGHT_MIN_RATIO}"
    )


def choose_noise(config: TrainConfig, profile: DataProfile) -> tuple[float, str]:
    """Off. The noise share 0.15 was chosen on Banking77's validation split; on another domain no
    share has been validated. Whether (domain-neutral) noise helps a given data set is measured
    with ``make experiment SET=noise TICKETS=...``; a share that wins there goes into a preset file."""
    return 0.0, "not validated on this data: `make experiment SET=noise TICKETS=<file>` measures it"


def choose_noise_context(config: TrainConfig, profile: DataProfile) -> tuple[str, str]:
    """Domain-neutral noise: Banking77's context sentences ("Hello Bank,", "I have the premium
    plan.") would teach another domain banking words."""
    return "neutral", "no Banking77 context sentences around another domain's tickets"
