"""One code path for BERT, DistilBERT and RoBERTa: tiny random configs train, export, quantize, serve.

RoBERTa needs a byte-level BPE tokenizer: a tiny one is trained here with the ``tokenizers``
library on the test tickets (no download).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.test_train import fast_config, tiny_dataset
from training.train import train


def _bert_base(out: Path, minilm_path: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    return out


def _distilbert_base(out: Path, minilm_path: Path) -> Path:
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    DistilBertModel(config).save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)  # WordPiece, like distilbert-base-uncased
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # DistilBERT has no token types
    tokenizer.save_pretrained(out)
    return out


def _roberta_base(out: Path, _: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [*tiny_dataset(30).texts, "Hi, my card payment failed. Thanks, Anna. Sent from my iPhone"]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials))
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
    )  # fmt: skip
    tokenizer.save_pretrained(out)
    config = RobertaConfig(
        vocab_size=bpe.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=130, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        type_vocab_size=1,
    )  # fmt: skip
    RobertaModel(config).save_pretrained(out)
    return out


BUILDERS = {"bert": _bert_base, "distilbert": _distilbert_base, "roberta": _roberta_base}
INPUTS = {
    "bert": ["input_ids", "attention_mask", "token_type_ids"],
    "distilbert": ["input_ids", "attention_mask"],
    "roberta": ["input_ids", "attention_mask"],
}


@pytest.mark.parametrize(("arch", "head"), [("bert", "cls"), ("distilbert", "cls"), ("roberta", "cls"),
                                            ("roberta", "mean")])  # fmt: skip
def test_architecture_trains_exports_and_serves(
    arch: str, head: str, tmp_path: Path, minilm_path: Path
) -> None:
    import torch
    from transformers import AutoTokenizer

    from training.export import export_artifact, fp32_onnx_path
    from training.modeling import load_classifier
    from triage_core.inference import ArtifactClassifier
    from triage_core.preprocessing import PreprocessConfig, preprocess

    torch.manual_seed(0)
    base = BUILDERS[arch]((tmp_path / "base"), minilm_path)
    config = fast_config(base, head=head, noisy_augmentation=0.1, mlm_epochs=0.2, layer_lr_decay=0.8)
    data = tiny_dataset()
    result = train(config, data, tiny_dataset(4, seed=1), tmp_path / "work")
    assert result.history[0]["train_loss"] > 0 and result.stages["mlm"]["steps"] >= 1

    artifact = export_artifact(
        result.model_dir, tmp_path / "model", result.labels, 32, PreprocessConfig(), base_model=arch
    )
    classifier = ArtifactClassifier(artifact)  # int8, ONNX Runtime only
    assert classifier.manifest.onnx_inputs == INPUTS[arch]
    assert classifier.manifest.quantization == "int8"
    texts = ["my card has not arrived", "Hi,\n\nwhat exchange rate do you use? 🙂\n\nThanks, Bo", "top up"]
    scores = classifier.predict_scores(texts)
    assert scores.shape == (3, 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-4)

    # the fp32 ONNX graph computes what the torch model computes
    import onnxruntime as ort

    model = load_classifier(result.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    clean = [preprocess(t, PreprocessConfig()) for t in texts]
    batch = tokenizer(clean, padding=True, truncation=True, max_length=32, return_tensors="np")
    feed = {name: batch[name].astype(np.int64) for name in INPUTS[arch]}
    session = ort.InferenceSession(str(fp32_onnx_path(artifact)), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(["logits"], feed)
    with torch.no_grad():
        torch_logits = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)
