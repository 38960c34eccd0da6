"""Run a serving artifact: tokenize, ONNX Runtime, scores. No torch, no transformers.

The inference server and the training pipeline's evaluation of the served model both use
:class:`ArtifactClassifier`, so the numbers in ``metrics.json`` are the numbers the endpoint
produces.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from triage_core.artifact import MODEL_FILE, TOKENIZER_FILE, ArtifactError, ArtifactManifest, load_manifest
from triage_core.linear import LINEAR_FILE, Features, LinearModel
from triage_core.longtext import Framing, LongText, Tokens, Windows, fit_long, pool_logits
from triage_core.preprocessing import preprocess


def scores_from_logits(logits: np.ndarray, scoring: str) -> np.ndarray:
    """Per-class scores in [0, 1]: softmax over classes, or independent sigmoids (one-vs-rest)."""
    logits = logits.astype(np.float32, copy=False)
    if scoring == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class TicketTokenizer:
    """The artifact's ``tokenizer.json`` with the artifact's long-ticket strategy
    (:mod:`triage_core.longtext`; ``head``: the tokenizer's own truncation at ``max_length``)."""

    def __init__(
        self,
        tokenizer_file: str | Path,
        max_length: int,
        input_names: list[str],
        long_text: LongText | None = None,
        wordpiece: bool = True,
    ):
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.long_text = long_text or LongText()
        self.tokenizer.no_padding()
        if self.long_text.strategy == "head":
            self.tokenizer.enable_truncation(max_length=max_length)
            self.framing = None
        else:
            self.tokenizer.no_truncation()
            self.framing = Framing(self.tokenizer)
        self.max_length = max_length
        self.input_names = input_names
        self.pad_id = self._pad_id()
        # the compiled WordPiece for ASCII texts (False: tokenizers for every text, the tests' oracle)
        self.wordpiece = None
        if wordpiece:
            from triage_core.wordpiece import AsciiWordPiece  # numba: not in the Lambdas' packages

            self.wordpiece = AsciiWordPiece.of(self.tokenizer, self.framing)

    def _pad_id(self) -> int:
        for token in ("[PAD]", "<pad>"):
            token_id = self.tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id
        return 0

    def encode(self, texts: list[str]) -> list[Encoding | Tokens]:
        """Encode already-preprocessed texts, unpadded (batching pads per batch). A ticket that
        fits is the tokenizer's ``Encoding``, or the same ids as a ``Tokens`` of int64 arrays
        from the compiled WordPiece (:mod:`triage_core.wordpiece`, ASCII texts of a BERT-family
        tokenizer), whatever the strategy; a longer one is cut by it (``head_tail``: a
        ``Tokens``; ``windows``: a ``Windows`` of several rows). ``encode_batch_fast``:
        ``encode_batch`` without offsets and token strings (zeros and empty strings), which
        nothing here reads; 1.6x faster per Banking77 ticket (docs/benchmarks.md)."""
        if self.wordpiece is None:
            encodings = self.tokenizer.encode_batch_fast(texts)
        else:
            cut = self.max_length if self.framing is None else None  # what the tokenizer truncates at
            encodings = self.wordpiece.encode(texts, cut, self.tokenizer.encode_batch_fast)
        if self.framing is None:
            return encodings
        limit, framing, strategy = self.max_length, self.framing, self.long_text
        for i, enc in enumerate(encodings):
            ids = enc.ids
            if len(ids) > limit:
                content = ids[len(framing.head_ids) : len(ids) - len(framing.tail_ids)]
                content = content.tolist() if isinstance(content, np.ndarray) else content
                encodings[i] = fit_long(content, framing, limit, strategy)
        return encodings

    def pad(self, encodings: list[Encoding]) -> dict[str, np.ndarray]:
        """Right-pad a batch to its longest member and build the ONNX feed."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: feed[name] for name in self.input_names}


class Both:
    """An ensemble's item: the ticket's token encoding and its TF-IDF vector, or in a cascade
    the linear model's scores instead (computed once in :meth:`ArtifactClassifier.encode`)."""

    __slots__ = ("encoding", "features", "ids", "linear", "parts")

    def __init__(
        self, encoding: Encoding | Tokens, features: Features | None, linear: np.ndarray | None = None
    ):
        self.encoding = encoding
        self.features = features
        self.linear = linear
        self.ids = encoding.ids
        self.parts = encoding.parts if type(encoding) is Windows else None  # rows, for the batcher


class Settled:
    """A cascade's ticket settled by the linear model (its top score reached the manifest's
    ``linear.cascade_bar``): its scores are final, it is never tokenized and never reaches ONNX
    Runtime. Its ``ids`` are empty, so the length batchers count it as no tokens."""

    __slots__ = ("ids", "parts", "scores")

    def __init__(self, scores: np.ndarray):
        self.scores = scores
        self.ids = ()
        self.parts = None


def cascade_settled(linear_scores: np.ndarray, bar: float | None) -> np.ndarray:
    """Which tickets a cascade settles with the linear model alone: top linear score >= ``bar``
    (None: no cascade, none)."""
    if bar is None:
        return np.zeros(len(linear_scores), dtype=bool)
    return linear_scores.max(axis=1) >= np.float32(bar)


def model_rows(item: object) -> int:
    """ONNX Runtime rows of an :meth:`ArtifactClassifier.encode` item: none for a ticket a cascade
    settled (empty ``ids``), one per window for a ``windows`` ticket, else one."""
    if not len(item.ids):
        return 0
    parts = getattr(item, "parts", None)
    return 1 if parts is None else len(parts)


@dataclass(frozen=True)
class BatchRule:
    """Which tickets share one ONNX Runtime run. The server's batcher, :meth:`ArtifactClassifier.
    predict_scores` (training's evaluation) and the benchmark's limit all group tickets by it.

    Tickets join a batch shortest first, a length at a time, while the batch holds at most
    ``max_batch`` tickets and at most ``max_tokens`` padded tokens (rows x the longest row), and
    while padding stays within ``max_padding`` of the real tokens: a batch runs at the width of
    its longest row, so ONNX Runtime's work is rows x width. On this model and machine the cost per
    row hardly depends on the batch size (1 to 64 rows within 10 %, docs/benchmarks.md) but grows
    with the padding: length-sorted batches of 32 pad Banking77's unsettled tickets by about 70 %
    in the server's windows; a cap of 10 % makes the same tickets about 1.4x cheaper. A batch whose
    first length alone passes the caps still takes one ticket."""

    max_batch: int = 32
    max_tokens: int | None = 32 * 128
    max_padding: float | None = 0.1

    def within(self, tickets: int, rows: int, width: int) -> bool:
        """``tickets`` tickets of ``rows`` model rows padded to ``width`` keep the size caps."""
        return tickets <= self.max_batch and (self.max_tokens is None or rows * width <= self.max_tokens)

    def overpadded(self, rows: int, tokens: int, width: int) -> bool:
        """``rows`` rows padded to ``width`` pass ``max_padding`` over their ``tokens`` real tokens."""
        return self.max_padding is not None and rows * width > (1 + self.max_padding) * tokens

    def fit(
        self, tickets: int, rows: int, tokens: int, width: int, available: Sequence[int]
    ) -> tuple[int, int, int]:
        """How many tickets of ``width`` tokens join a batch of ``tickets`` tickets, ``rows`` rows
        and ``tokens`` real tokens (every earlier ticket is at most ``width`` long), given the
        model rows of the candidates in ``available`` (in order); and the batch's rows and tokens
        with them. The size caps take candidates one by one (a batch's first ticket always
        comes); padding is all-or-nothing: more tickets at the batch's width only lower its share,
        so if all that may come do not keep it within ``max_padding``, none come."""
        added, new_rows = 0, rows
        for extra in available[: self.max_batch - tickets]:
            if (tickets or added) and not self.within(tickets + added + 1, new_rows + extra, width):
                break
            new_rows += extra
            added += 1
        new_tokens = tokens + (new_rows - rows) * width
        if added and tickets and self.overpadded(new_rows, new_tokens, width):
            return 0, rows, tokens
        return added, new_rows, new_tokens

    def batches(self, items: Sequence[object]) -> list[list[int]]:
        """Indices of ``items`` (:meth:`ArtifactClassifier.encode` items) in batches, shortest first."""
        order = sorted(range(len(items)), key=lambda i: len(items[i].ids))
        out: list[list[int]] = []
        current: list[int] = []
        rows = tokens = 0
        start = 0
        while start < len(order):
            width = len(items[order[start]].ids)
            end = start
            while end < len(order) and len(items[order[end]].ids) == width:
                end += 1
            while start < end:  # this length's tickets: into the current batch, then new ones
                available = [model_rows(items[i]) for i in order[start:end]]
                added, rows, tokens = self.fit(len(current), rows, tokens, width, available)
                if not added:
                    out.append(current)
                    current, rows, tokens = [], 0, 0
                    continue
                current += order[start : start + added]
                start += added
                if len(current) == self.max_batch or start < end:
                    out.append(current)
                    current, rows, tokens = [], 0, 0
        if current:
            out.append(current)
        return out


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    top_k: list[tuple[str, float]]


class ArtifactClassifier:
    """Loads an artifact directory once and classifies batches of raw ticket texts."""

    def __init__(self, directory: str | Path, intra_op_threads: int = 0, inter_op_threads: int = 1):
        directory = Path(directory)
        self.manifest: ArtifactManifest = load_manifest(directory)
        self.labels = self.manifest.labels
        self.kind = self.manifest.model
        self.linear: LinearModel | None = None
        self.tokenizer: TicketTokenizer | None = None
        self.session: ort.InferenceSession | None = None
        self._model_path = directory / MODEL_FILE
        if self.kind != "linear":
            self.tokenizer = TicketTokenizer(
                directory / TOKENIZER_FILE,
                self.manifest.max_length,
                self.manifest.onnx_inputs,
                self.manifest.long_text,
            )
            self.session = self._open_session(intra_op_threads, inter_op_threads)
            self._check_model_interface(directory)
        if self.kind != "transformer":
            self.linear = self._load_linear(directory)
        self._pooled = self.manifest.long_text.strategy == "windows"

    def use_long_text(self, strategy: LongText) -> None:
        """Score long tickets with ``strategy`` from now on (training compares the candidates on
        the validation split with this, then writes the winner into the manifest)."""
        manifest = self.manifest
        self.manifest = manifest.model_copy(update={"long_text": strategy})
        self.tokenizer = TicketTokenizer(
            self._model_path.parent / TOKENIZER_FILE, manifest.max_length, manifest.onnx_inputs, strategy
        )
        self._pooled = strategy.strategy == "windows"

    def use_cascade_bar(self, bar: float | None) -> None:
        """Settle tickets with the linear model at ``bar`` from now on (None: no cascade; training
        compares the candidates on the validation split with this, then writes the bar into the
        manifest)."""
        linear = self.manifest.linear.model_copy(update={"cascade_bar": bar})
        self.manifest = self.manifest.model_copy(update={"linear": linear})

    def _load_linear(self, directory: Path) -> LinearModel:
        try:
            linear = LinearModel(directory / LINEAR_FILE, self.manifest.linear)
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{directory / LINEAR_FILE} cannot be loaded: {exc}") from exc
        if linear.n_labels != len(self.labels):
            raise ArtifactError(
                f"{directory}: linear.npz scores {linear.n_labels} labels, "
                f"the manifest has {len(self.labels)}"
            )
        return linear

    def _open_session(
        self, intra_op_threads: int, inter_op_threads: int = 1, allow_spinning: bool = True
    ) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not allow_spinning:  # idle pool threads sleep instead of busy-waiting for the next run
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self._model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for unreadable models
            raise ArtifactError(f"{self._model_path} cannot be loaded by ONNX Runtime: {exc}") from exc

    def runner(
        self, intra_op_threads: int, allow_spinning: bool = True
    ) -> Callable[[list[Encoding]], np.ndarray]:
        """:meth:`run` on a second session of the same model with its own thread settings
        (the server's all-core session for batches that run alone); tokenizer and scoring shared."""
        if self.kind == "linear":
            return self.run
        return functools.partial(
            self._score, self._open_session(intra_op_threads, allow_spinning=allow_spinning)
        )

    def _check_model_interface(self, directory: Path) -> None:
        """Fail at load time, not on the first request, if model.onnx and the manifest disagree."""
        inputs = [i.name for i in self.session.get_inputs()]
        if sorted(inputs) != sorted(self.manifest.onnx_inputs):
            raise ArtifactError(
                f"{directory}: model.onnx takes inputs {inputs}, "
                f"the manifest says {self.manifest.onnx_inputs}"
            )
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if "logits" not in outputs:
            raise ArtifactError(f"{directory}: model.onnx has no 'logits' output (outputs: {list(outputs)})")
        width = outputs["logits"][-1] if outputs["logits"] else None
        if isinstance(width, int) and width != len(self.labels):
            raise ArtifactError(
                f"{directory}: model.onnx outputs {width} logits, the manifest has {len(self.labels)} labels"
            )

    def clean(self, texts: list[str]) -> list[str]:
        config = self.manifest.preprocessing
        return [preprocess(t, config) for t in texts]

    def encode(self, cleaned: list[str]) -> list:
        """What :meth:`run` takes for preprocessed texts, one item per ticket: token encodings
        (transformer), TF-IDF vectors (linear) or both (ensemble). Every item has ``ids``, whose
        length the batchers sort by. In a cascade (``linear.cascade_bar``) a ticket the linear
        model settles is a :class:`Settled` item with empty ``ids``: no tokens, no ONNX run."""
        if self.kind == "transformer":
            return self.tokenizer.encode(cleaned)
        if self.kind == "linear":
            return self.linear.features(cleaned)
        bar = self.manifest.linear.cascade_bar
        if bar is None:
            features = self.linear.features(cleaned)
            return [Both(e, f) for e, f in zip(self.tokenizer.encode(cleaned), features, strict=True)]
        # the cascade: the linear model scores every ticket (its rows as one batch, no object per
        # ticket); only those under the bar are tokenized, and their items carry the scores
        linear = scores_from_logits(self.linear.logits(self.linear.feature_batch(cleaned)), "softmax")
        settled = cascade_settled(linear, bar)
        rest = np.flatnonzero(~settled).tolist()
        encodings = iter(self.tokenizer.encode([cleaned[i] for i in rest]) if rest else ())
        return [
            Settled(scores) if done else Both(next(encodings), None, scores)
            for scores, done in zip(linear, settled.tolist(), strict=True)
        ]

    def run(self, encodings: list) -> np.ndarray:
        """Scores [batch, n_labels] for one batch of :meth:`encode` items."""
        return self._score(self.session, encodings)

    def _score(self, session: ort.InferenceSession | None, encodings: list) -> np.ndarray:
        if self.kind == "transformer":
            return scores_from_logits(self._logits(session, encodings), self.manifest.scoring)
        if self.kind == "linear":
            return scores_from_logits(self.linear.logits(encodings), "softmax")
        if not any(type(b) is Settled for b in encodings):
            return self._ensemble(session, encodings)
        out = np.empty((len(encodings), len(self.labels)), dtype=np.float32)
        rest = []
        for row, item in enumerate(encodings):
            if type(item) is Settled:
                out[row] = item.scores
            else:
                rest.append(row)
        if rest:  # ONNX Runtime only for the tickets the linear model did not settle
            out[rest] = self._ensemble(session, [encodings[row] for row in rest])
        return out

    def _ensemble(self, session: ort.InferenceSession, items: list[Both]) -> np.ndarray:
        weight = self.manifest.linear.weight
        if all(b.linear is not None for b in items):
            linear = np.stack([b.linear for b in items])
        else:
            linear = scores_from_logits(self.linear.logits([b.features for b in items]), "softmax")
        logits = self._logits(session, [b.encoding for b in items])
        model = scores_from_logits(logits, self.manifest.scoring)
        return weight * linear + (1 - weight) * model

    def _logits(self, session: ort.InferenceSession, encodings: list) -> np.ndarray:
        if self._pooled and any(type(e) is Windows for e in encodings):
            rows, counts = [], []
            for enc in encodings:
                parts = enc.parts if type(enc) is Windows else (enc,)
                rows.extend(parts)
                counts.append(len(parts))
            (logits,) = session.run(["logits"], self.tokenizer.pad(rows))
            return pool_logits(logits, counts, self.manifest.long_text.pooling)
        (logits,) = session.run(["logits"], self.tokenizer.pad(encodings))
        return logits

    def batch_rule(self, rule: BatchRule) -> BatchRule:
        """``rule`` as this artifact's batches keep it: a linear artifact's rows are sparse feature
        vectors, nothing is padded, so padding never splits its batches."""
        return replace(rule, max_padding=None) if self.kind == "linear" else rule

    def predict_scores(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Scores for raw texts, in batches of up to ``batch_size`` by the server's
        :class:`BatchRule`, returned in input order."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        encodings = self.encode(self.clean(texts))
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for idx in self.batch_rule(BatchRule(max_batch=batch_size)).batches(encodings):
            out[idx] = self.run([encodings[i] for i in idx])
        return out

    def top_k(self, scores: np.ndarray, k: int = 1) -> list[Prediction]:
        k = max(1, min(k, len(self.labels)))
        preds = []
        for row in scores:
            best = np.argsort(-row, kind="stable")[:k]  # ties: first label, like argmax
            pairs = [(self.labels[i], float(row[i])) for i in best]
            preds.append(Prediction(label=pairs[0][0], score=pairs[0][1], top_k=pairs))
        return preds
