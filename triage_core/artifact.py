"""The serving artifact: the one format that training writes and the container reads.

An artifact is a directory (``artifacts/model/`` locally, ``/opt/ml/model`` in SageMaker)::

    model.onnx            int8 ONNX model. Inputs: the names in ``onnx_inputs`` (int64,
                          shape [batch, seq]); output ``logits`` (float32, [batch, n_labels]).
    tokenizer.json        Hugging Face ``tokenizers`` file (no transformers needed to load it).
    triage_artifact.json  this manifest: ordered labels, scoring, max length, long-ticket
                          strategy, preprocessing, review threshold, which model is shipped.
    linear.npz            (``model`` "linear" or "ensemble") the TF-IDF + logistic regression
                          model, format in :mod:`triage_core.linear`. An ensemble with
                          ``linear.cascade_bar`` set is a confidence cascade: a ticket whose top
                          linear (softmax) score is >= the bar is served the linear model's
                          scores and never tokenized nor run through model.onnx; every other
                          ticket gets the ensemble (``weight * linear + (1 - weight) * onnx``).
    metrics.json          (optional) evaluation report of this exact artifact on the test split.

Nothing here imports torch or transformers: the serving image has neither.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from triage_core.linear import LINEAR_FILE, LinearSpec
from triage_core.longtext import LongText
from triage_core.preprocessing import PreprocessConfig

FORMAT_VERSION = 1
MANIFEST_FILE = "triage_artifact.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
METRICS_FILE = "metrics.json"
# needs_review when the top score is below this, for an artifact that does not carry its own
DEFAULT_REVIEW_THRESHOLD = 0.5


def resolve_review_threshold(
    override: float | None, artifact: float | None, override_name: str
) -> tuple[float, str]:
    """The review threshold in force and where it comes from: ``override`` when given (named
    ``override_name``: the server's TRIAGE_REVIEW_THRESHOLD, compare-models' option), else the
    artifact's (chosen on the validation split when it was trained), else the default."""
    if override is not None:
        return override, override_name
    if artifact is not None:
        return artifact, "artifact"
    return DEFAULT_REVIEW_THRESHOLD, "default"


class ArtifactError(ValueError):
    """The artifact directory is missing a file or its manifest is invalid."""


class ArtifactManifest(BaseModel):
    """What a consumer must know to turn text into a label with ``model.onnx``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = FORMAT_VERSION
    labels: list[str] = Field(min_length=2, description="index i is logits[:, i]")
    scoring: Literal["softmax", "sigmoid"] = Field(
        "softmax",
        description="softmax: single-label cross-entropy head; sigmoid: one-vs-rest head",
    )
    max_length: int = Field(128, ge=8, le=512, description="tokens, including special tokens")
    long_text: LongText = Field(
        default_factory=LongText, description="what a ticket longer than max_length becomes"
    )
    model: Literal["transformer", "linear", "ensemble"] = Field(
        "transformer",
        description="the shipped scorer: model.onnx, linear.npz, or their scores averaged with "
        "linear.weight on the linear model's (training chooses on the validation split)",
    )
    linear: LinearSpec | None = None
    onnx_inputs: list[str] = Field(default_factory=lambda: ["input_ids", "attention_mask"])
    preprocessing: PreprocessConfig = Field(default_factory=PreprocessConfig)
    base_model: str = ""
    quantization: Literal["int8", "none"] = "int8"
    review_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="a ticket whose top score is below this needs review; training chooses it on "
        "the validation split (metrics.json says how); None: the server's default "
        f"({DEFAULT_REVIEW_THRESHOLD})",
    )
    review_target_accuracy: float | None = Field(
        None, ge=0.0, le=1.0, description="the accuracy of auto-accepted tickets the threshold was chosen for"
    )
    review_max_share: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="the ceiling on the share of tickets sent to review it was chosen with",
    )
    quantization_reason: str = Field(
        "", description="why this quantization is served (the export's parity gate on the validation split)"
    )
    training_mix: dict[str, int] | None = Field(
        None,
        description="tickets per label in the training split: the reference the pipeline measures the "
        "predicted category mix against (drift); written by :func:`store_training_mix`",
    )

    @model_validator(mode="after")
    def _linear_described(self) -> ArtifactManifest:
        if self.model != "transformer" and self.linear is None:
            raise ValueError(f"model {self.model!r} needs the 'linear' settings")
        if self.model != "ensemble" and self.linear is not None and self.linear.cascade_bar is not None:
            raise ValueError(f"linear.cascade_bar needs model 'ensemble', not {self.model!r}")
        return self

    def required_files(self) -> list[str]:
        files = [MANIFEST_FILE]
        if self.model != "linear":
            files += [MODEL_FILE, TOKENIZER_FILE]
        if self.model != "transformer":
            files.append(LINEAR_FILE)
        return files

    @model_validator(mode="after")
    def _mix_of_known_labels(self) -> ArtifactManifest:
        if self.training_mix is not None:
            unknown = sorted(set(self.training_mix) - set(self.labels))
            if (
                unknown
                or any(n < 0 for n in self.training_mix.values())
                or not sum(self.training_mix.values())
            ):
                raise ValueError(
                    f"training_mix needs counts >= 0 of the artifact's labels (unknown: {unknown})"
                )
        return self

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        return labels


def write_manifest(directory: str | Path, manifest: ArtifactManifest) -> Path:
    path = Path(directory) / MANIFEST_FILE
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


@contextmanager
def edited_manifest(directory: str | Path) -> Iterator[dict[str, Any]]:
    """The artifact's manifest as a dict to change in the block; validated and written when the
    block ends (nothing is written if it raises): how each training step records what it chose."""
    data = load_manifest(directory).model_dump()
    yield data
    write_manifest(directory, ArtifactManifest.model_validate(data))


def store_training_mix(directory: str | Path, training_labels: Iterable[str]) -> None:
    """Count the training split's labels into the manifest's ``training_mix`` (every label of the
    artifact, 0 included) and write it: the one writer of the field."""
    counts = Counter(training_labels)
    with edited_manifest(directory) as manifest:
        manifest["training_mix"] = {label: int(counts.get(label, 0)) for label in manifest["labels"]}


def load_manifest(directory: str | Path) -> ArtifactManifest:
    """Load and validate the manifest, checking that the files it needs are present."""
    directory = Path(directory)
    if not (directory / MANIFEST_FILE).is_file():
        missing = [f for f in (MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE) if not (directory / f).is_file()]
        raise ArtifactError(f"{directory} is not a model artifact: missing {', '.join(missing)}")
    try:
        manifest = ArtifactManifest.model_validate(json.loads((directory / MANIFEST_FILE).read_text("utf-8")))
    except (ValueError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"invalid {MANIFEST_FILE} in {directory}: {exc}") from exc
    missing = [f for f in manifest.required_files() if not (directory / f).is_file()]
    if missing:
        raise ArtifactError(f"{directory} is not a model artifact: missing {', '.join(missing)}")
    return manifest
