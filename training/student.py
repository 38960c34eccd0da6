"""A shallower base model for a distilled student: the base model's first N encoder layers.

``python -m training.student --layers 3 --output artifacts/minilm-l3`` writes the default base
model (all-MiniLM-L6-v2) cut to its bottom 3 transformer layers, with its tokenizer, as a
Hugging Face model directory. ``make train-student`` then fine-tunes it with the reference
model's soft labels (``--base-model artifacts/minilm-l3 --distill-teachers
artifacts/reference/work/hf_model``): the student's ONNX graph runs about twice as fast as the
6-layer one (docs/benchmarks.md, "A faster default").

Why the bottom layers: of the layer-dropping strategies compared by Sajjad et al. ("On the
effect of dropping layers of pre-trained transformer models", 2020), dropping the top layers
kept the most task accuracy after fine-tuning; the embeddings and the first layers carry the
lexical features a short ticket needs. The output directory's name keeps ``minilm`` in it, so
``--base-model`` picks the MiniLM preset (``training.config.model_family``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.config import TrainConfig, resolve_base_model


def cut_layers(base_model: str, layers: int, output: Path) -> Path:
    """Save ``base_model`` with only its first ``layers`` encoder layers (and its tokenizer)."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(base_model)
    total = model.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise ValueError(f"layers must be in [1, {total}] for {base_model}, got {layers}")
    model.encoder.layer = model.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    AutoTokenizer.from_pretrained(base_model).save_pretrained(output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.student", description=__doc__)
    parser.add_argument("--base-model", default=TrainConfig().base_model, help="path or hub id")
    parser.add_argument("--layers", type=int, default=3, help="encoder layers to keep (default 3)")
    parser.add_argument("--output", type=Path, default=Path("artifacts/minilm-l3"))
    args = parser.parse_args(argv)
    out = cut_layers(resolve_base_model(args.base_model), args.layers, args.output)
    print(f"{args.layers}-layer base model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
