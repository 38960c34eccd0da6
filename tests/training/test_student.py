"""training.student: the cut base model is the original's bottom layers, nothing else changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import model_family
from training.student import cut_layers, main


def test_cut_model_computes_the_original_models_hidden_state_after_its_first_layer(
    tiny_base_model: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    out = cut_layers(str(tiny_base_model), 1, tmp_path / "minilm-l1")
    full = AutoModel.from_pretrained(tiny_base_model).eval()
    cut = AutoModel.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)  # saved beside the weights
    batch = tokenizer(["my card has not arrived yet", "top up failed"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = full(**batch, output_hidden_states=True).hidden_states[1]
        got = cut(**batch).last_hidden_state
    assert full.config.num_hidden_layers == 2 and cut.config.num_hidden_layers == 1
    torch.testing.assert_close(got, expected)
    # the embeddings are the original's, and training picks the MiniLM preset from the name
    torch.testing.assert_close(cut.embeddings.word_embeddings.weight, full.embeddings.word_embeddings.weight)
    assert model_family(str(out)) == "minilm"


def test_more_layers_than_the_model_has_is_refused(tiny_base_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"layers must be in \[1, 2\]"):
        main(["--base-model", str(tiny_base_model), "--layers", "3", "--output", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
