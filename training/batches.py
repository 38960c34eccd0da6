"""Token batches for training and prediction: tokenize once, pad per batch, group by length.

Shared by the fine-tuning loop (``training.train``) and the stages that run a fine-tuned model
(``training.stages.teacher_probabilities``), so neither imports the other.
"""

from __future__ import annotations

import random

import numpy as np

from triage_core.longtext import LongText

HEAD_SHARE = LongText().head_share  # the serving default: the same tokens in training and serving


class TextEncoder:
    """Fast tokenizer with head truncation (or ``head_tail``: the long-ticket cut of
    :mod:`triage_core.longtext`), producing only the inputs the model accepts."""

    def __init__(self, tokenizer, model, max_length: int, truncation: str = "head") -> None:
        from training.modeling import input_names

        self.tokenizer = tokenizer
        self.tokenizer.truncation_side = "right"  # keep the head: see triage_core.preprocessing
        self.max_length = max_length
        self.truncation = truncation
        if truncation == "head_tail":
            from triage_core.longtext import Framing

            framing = Framing(tokenizer.backend_tokenizer)
            self._specials = (len(framing.head_ids), len(framing.tail_ids))
        accepted = input_names(model)
        self.names = [n for n in tokenizer.model_input_names if n in accepted]
        self.pad_id = tokenizer.pad_token_id or 0

    def encode(self, texts: list[str]) -> dict[str, list[list[int]]]:
        if self.truncation == "head_tail":
            return self._encode_head_tail(texts)
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=False)
        return {n: enc[n] for n in self.names}

    def _encode_head_tail(self, texts: list[str]) -> dict[str, list[list[int]]]:
        from triage_core.longtext import head_tail_positions

        prefix, suffix = self._specials
        enc = self.tokenizer(texts, truncation=False, padding=False, verbose=False)
        out: dict[str, list[list[int]]] = {n: [] for n in self.names}
        for row in range(len(texts)):
            n = len(enc["input_ids"][row])
            keep = head_tail_positions(n, self.max_length, prefix, suffix, HEAD_SHARE)
            for name in self.names:
                values = enc[name][row]
                out[name].append(values if len(keep) == n else [values[i] for i in keep])
        return out

    def collate(self, encoded: dict[str, list[list[int]]], idx: list[int], device=None):
        """Right-pad rows ``idx`` of ``encoded`` to their longest member: a dict of int64 tensors."""
        import torch

        width = max(len(encoded["input_ids"][i]) for i in idx)
        batch = {}
        for name in self.names:
            pad = self.pad_id if name == "input_ids" else 0
            rows = [encoded[name][i] + [pad] * (width - len(encoded[name][i])) for i in idx]
            batch[name] = torch.tensor(rows, dtype=torch.long, device=device)
        return batch


def length_grouped_batches(
    lengths: list[int], batch_size: int, group_batches: int, rng: random.Random
) -> list[list[int]]:
    """Shuffle, sort by length inside pools of ``group_batches`` batches, shuffle batch order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * group_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Rows sorted by length, cut into batches: the least padding for prediction."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def predict_logits(model, encoder: TextEncoder, texts: list[str], batch_size: int) -> np.ndarray:
    """Logits of the torch model for preprocessed texts, in input order (one process)."""
    import torch

    encoded = encoder.encode(texts)
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        for idx in sorted_batches([len(ids) for ids in encoded["input_ids"]], batch_size):
            out[idx] = model(**encoder.collate(encoded, idx, device)).logits.float().cpu().numpy()
    return out
