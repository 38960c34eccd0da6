"""Classifier heads on a BERT-family encoder, and loading a fine-tuned classifier of any head.

Heads (``TrainConfig.head``):

* ``cls``: the Hugging Face default (``AutoModelForSequenceClassification``): BERT/MiniLM use the
  tanh pooler over ``[CLS]`` + dropout + linear, DistilBERT ``[CLS]`` + linear/ReLU + linear,
  RoBERTa ``<s>`` + dense/tanh + linear. Saved and loaded with plain ``save_pretrained``.
* ``mean``: masked mean of the last hidden states (how all-MiniLM-L6-v2 was trained as a
  sentence encoder) + dropout + linear.
* ``mlp``: masked mean + dropout + linear(hidden, ``head_hidden``) + GELU + dropout + linear.

``mean`` and ``mlp`` are a :class:`PooledClassifier`: the encoder is saved with
``save_pretrained`` (its config carries the labels) and the head next to it
(``triage_head.json`` + ``triage_head.safetensors``). :func:`load_classifier` reads either kind.
Both return an object with ``.logits``, so training, export (an ONNX graph with the same inputs
and one ``logits`` output: the server needs nothing new) and the optimization report share one
code path.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HEADS = ("cls", "mean", "mlp")
HEAD_CONFIG_FILE = "triage_head.json"
HEAD_WEIGHTS_FILE = "triage_head.safetensors"
_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def _torch():
    import torch

    return torch


def _make_pooled_classifier_class():
    torch = _torch()
    from transformers.modeling_outputs import SequenceClassifierOutput

    class PooledClassifier(torch.nn.Module):
        """Encoder + masked mean pooling + a linear or MLP head."""

        def __init__(self, encoder, num_labels: int, head: str, hidden: int = 0, dropout: float = 0.1):
            super().__init__()
            if head not in ("mean", "mlp"):
                raise ValueError(f"PooledClassifier head must be mean or mlp, got {head!r}")
            self.encoder = encoder
            self.config = encoder.config
            self.head_type = head
            width = int(getattr(encoder.config, "hidden_size", 0) or encoder.config.dim)
            self.head_hidden = hidden or width
            self.head_dropout = dropout
            if head == "mean":
                self.head = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(width, num_labels))
            else:
                self.head = torch.nn.Sequential(
                    torch.nn.Dropout(dropout),
                    torch.nn.Linear(width, self.head_hidden),
                    torch.nn.GELU(),
                    torch.nn.Dropout(dropout),
                    torch.nn.Linear(self.head_hidden, num_labels),
                )
            accepted = set(inspect.signature(encoder.forward).parameters)
            self.encoder_input_names = [
                n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted
            ]

        def forward(self, input_ids, attention_mask, token_type_ids=None, **_: Any):
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None and "token_type_ids" in self.encoder_input_names:
                inputs["token_type_ids"] = token_type_ids
            hidden = self.encoder(**inputs).last_hidden_state
            pooled = mean_pool(hidden, attention_mask)
            return SequenceClassifierOutput(logits=self.head(pooled))

        def head_config(self) -> dict[str, Any]:
            return {
                "head": self.head_type,
                "hidden": self.head_hidden,
                "dropout": self.head_dropout,
                "num_labels": int(self.config.num_labels),
            }

        def save_pretrained(self, directory: str | Path) -> None:
            from safetensors.torch import save_file

            directory = Path(directory)
            self.encoder.save_pretrained(directory)
            (directory / HEAD_CONFIG_FILE).write_text(json.dumps(self.head_config(), indent=2) + "\n")
            state = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}
            save_file(state, str(directory / HEAD_WEIGHTS_FILE))

    return PooledClassifier


_CLASS_CACHE: dict[str, type] = {}


def pooled_classifier_class() -> type:
    """The ``PooledClassifier`` class (built lazily: torch is imported only when needed)."""
    if "PooledClassifier" not in _CLASS_CACHE:
        _CLASS_CACHE["PooledClassifier"] = _make_pooled_classifier_class()
    return _CLASS_CACHE["PooledClassifier"]


def mean_pool(hidden, attention_mask):
    """Mean of the hidden states of the real (unpadded) tokens."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-6)


def _label_kwargs(labels: list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def build_classifier(
    path: str, labels: list[str], head: str = "cls", hidden: int = 0, dropout: float = 0.1, **kwargs: Any
):
    """The encoder at ``path`` (local directory or hub id) with a fresh head for ``labels``."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    if head == "cls":
        return AutoModelForSequenceClassification.from_pretrained(
            path,
            problem_type="single_label_classification",
            ignore_mismatched_sizes=True,  # a base that already has a head for other labels
            **_label_kwargs(labels),
            **kwargs,
        )
    config = AutoConfig.from_pretrained(path, **_label_kwargs(labels))
    with _only_unexpected_weights_are_quiet():
        encoder = (
            AutoModel.from_pretrained(path, config=config, add_pooling_layer=False, **kwargs)
            if _has_pooler(config)
            else AutoModel.from_pretrained(path, config=config, **kwargs)
        )
    return pooled_classifier_class()(encoder, len(labels), head, hidden, dropout)


class _DropUnexpectedOnlyReports(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        return any(status in message for status in ("MISSING", "MISMATCH", "CONVERSION"))


@contextlib.contextmanager
def _only_unexpected_weights_are_quiet() -> Iterator[None]:
    """transformers warns with a load report when a checkpoint has weights the model does not use.
    A pooled head leaves the base's pooler (and any pretraining head) out on purpose, so a report
    listing only such UNEXPECTED weights is dropped; missing or mismatched weights still show."""
    target = logging.getLogger("transformers.modeling_utils")
    quiet = _DropUnexpectedOnlyReports()
    target.addFilter(quiet)
    try:
        yield
    finally:
        target.removeFilter(quiet)


def _has_pooler(config) -> bool:
    """BERT-like models take ``add_pooling_layer`` (unused by pooled heads: leave it out)."""
    return getattr(config, "model_type", "") in ("bert", "roberta", "xlm-roberta", "electra", "mpnet")


def load_classifier(directory: str | Path, **kwargs: Any):
    """A fine-tuned classifier saved by training, whatever its head."""
    directory = Path(directory)
    head_file = directory / HEAD_CONFIG_FILE
    if not head_file.is_file():
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(directory, **kwargs)
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    head = json.loads(head_file.read_text("utf-8"))
    config = AutoConfig.from_pretrained(directory)
    extra = {"add_pooling_layer": False} if _has_pooler(config) else {}
    encoder = AutoModel.from_pretrained(directory, config=config, **extra, **kwargs)
    model = pooled_classifier_class()(
        encoder, head["num_labels"], head["head"], head["hidden"], head["dropout"]
    )
    model.head.load_state_dict(load_file(str(directory / HEAD_WEIGHTS_FILE)))
    return model.eval()


def encoder_of(model):
    """The transformer encoder inside a classifier (``bert``/``distilbert``/``roberta``/...)."""
    return model.encoder if hasattr(model, "encoder_input_names") else model.base_model


def input_names(model) -> set[str]:
    """The inputs ``model.forward`` uses (``token_type_ids`` only for models that take them)."""
    if hasattr(model, "encoder_input_names"):
        return set(model.encoder_input_names)
    return set(inspect.signature(model.forward).parameters)


def is_head_parameter(model, name: str) -> bool:
    """Parameters a base encoder does not bring: the classification head.

    BERT's pooler (dense + tanh over ``[CLS]``) is not one of them: it is pretrained (next
    sentence prediction) and ships in BERT and MiniLM checkpoints, so it trains with the encoder
    at the encoder's learning rate (the top of the layer-wise decay), as in the BERT paper's
    fine-tuning, not at the fresh head's rate."""
    if hasattr(model, "encoder_input_names"):
        return name.startswith("head.")
    return name.startswith(("classifier.", "pre_classifier."))


def num_layers(model) -> int:
    config = encoder_of(model).config
    return int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layers", 0))


def layer_depth(name: str, n_layers: int) -> int:
    """Depth of an encoder parameter: 0 = embeddings, i + 1 = transformer layer i, n_layers + 1
    = anything above the layers (e.g. a final layer norm)."""
    match = _LAYER.search(name)
    if match:
        return int(match.group(1)) + 1
    if "embeddings" in name:
        return 0
    return n_layers + 1
