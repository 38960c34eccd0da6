"""BERT's WordPiece tokenization of ASCII text, compiled (numba): the fast path of
:class:`triage_core.inference.TicketTokenizer`.

The owner of tokenization is the artifact's ``tokenizer.json`` run by Hugging Face
``tokenizers``. For the make of tokenizer the BERT-family models here have (MiniLM, BERT,
DistilBERT: a ``BertNormalizer`` that cleans text, ``BertPreTokenizer``, a ``WordPiece`` model
and a template of special tokens) this module computes the same ids for a text that is all
ASCII and holds none of the tokenizer's added tokens (``[CLS]``, ``[MASK]``, ..., which
``tokenizers`` finds in the raw text first). On ASCII text the steps are few:

* clean (``BertNormalizer(clean_text=True)``): NUL and the control characters are dropped, tab,
  newline and carriage return become spaces; ``A``-``Z`` are lowercased when the normalizer
  lowercases (accents and Chinese characters, its other steps, are not ASCII);
* split (``BertPreTokenizer``): at whitespace, and around each ASCII punctuation mark, which is
  a word of its own;
* each word (``WordPiece``): one ``[UNK]`` when longer than ``max_input_chars_per_word``; else
  the longest vocabulary entry that starts it, then the longest ``##`` entry that continues it,
  and so on (greedy longest match first); one ``[UNK]`` for the whole word when some rest of it
  starts no entry;
* the template's special tokens around the pieces (``[CLS] ... [SEP]``), the pieces first cut
  to ``max_length`` minus those when the tokenizer truncates (the ``head`` strategy).

Any other text, and any tokenizer of another make (RoBERTa's byte-level BPE, a normalizer that
keeps control characters or is a sequence, a template with other type ids), goes to
``tokenizers`` itself: :meth:`AsciiWordPiece.of` returns None for those tokenizers, and
:meth:`AsciiWordPiece.encode` hands such texts to the tokenizer it is given.
``tests/core/test_wordpiece.py`` holds the two to equal ids on every ASCII character, on
generated text (Hypothesis), on every Banking77 ticket and its e-mail form, cased and uncased,
truncated and not.

Why (issue #23): ``tokenizers`` took ~20 us per Banking77 ticket on one core in the server (an
``Encoding`` object with offsets, words and masks per text, then a Python list per ``ids``
read), a quarter of the server's own work beside ONNX Runtime; this walk takes under 1 us per
ticket and runs without the GIL. Imported only by the serving code path (not by the Lambdas).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from itertools import pairwise

import numpy as np
from numba import njit

from triage_core.longtext import Framing, Tokens
from triage_core.trie import Trie, transition

# What each ASCII character is to BertNormalizer(clean_text=True) + BertPreTokenizer.
DROPPED, SPACE, PUNCTUATION, LETTER = 0, 1, 2, 3  # in this order: the kernel tests kind <= SPACE


def ascii_classes(lowercase: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(kind, fold)`` for the 128 ASCII characters: ``kind[c]`` one of the constants above,
    ``fold[c]`` the character the normalizer makes of it (lowercased or itself). Control
    characters are dropped but tab, newline and carriage return, which are whitespace
    (``tokenizers``' ``bert`` normalizer: ``is_control`` excludes them, ``is_whitespace``
    includes them); punctuation is Rust's ``is_ascii_punctuation`` (``BertPreTokenizer``'s
    ``is_bert_punc``), the 32 printable characters that are neither letters, digits nor space."""
    kind = np.empty(128, np.int8)
    for code in range(128):
        char = chr(code)
        if char in "\t\n\r ":
            kind[code] = SPACE
        elif code < 32 or code == 127:
            kind[code] = DROPPED
        elif char.isalnum():
            kind[code] = LETTER
        else:
            kind[code] = PUNCTUATION
    fold = np.arange(128, dtype=np.uint8)
    if lowercase:
        fold[ord("A") : ord("Z") + 1] += 32
    return kind, fold


class AsciiWordPiece:
    """A ``WordPiece`` tokenizer's vocabulary as two tries over ASCII codes (word starts, and
    continuations without their ``##``), and its special tokens: see the module docstring."""

    def __init__(
        self,
        vocab: dict[str, int],
        unk_id: int,
        prefix: str,
        max_chars: int,
        lowercase: bool,
        framing: Framing,
        added: Sequence[str],
    ):
        starts = [(term, i) for term, i in vocab.items() if term.isascii() and term]
        rests = [
            (term[len(prefix) :], i)
            for term, i in starts
            if term.startswith(prefix) and len(term) > len(prefix)
        ]
        self.starts = Trie([term.encode() for term, _ in starts], 128, [i for _, i in starts]).arrays
        self.rests = Trie([term.encode() for term, _ in rests], 128, [i for _, i in rests]).arrays
        self.unk_id, self.max_chars = unk_id, max_chars
        self.kind, self.fold = ascii_classes(lowercase)
        self.head = np.array(framing.head_ids, np.int64)
        self.tail = np.array(framing.tail_ids, np.int64)
        # tokenizers finds added tokens in the raw text (or the normalized one): such texts go to it
        self.added = re.compile("|".join(map(re.escape, added)), re.IGNORECASE) if added else None
        self._zeros = np.zeros(0, np.int64)

    @classmethod
    def of(cls, tokenizer, framing: Framing | None = None) -> AsciiWordPiece | None:
        """The fast path for a ``tokenizers.Tokenizer``, or None when it is not of the make this
        module reproduces (see the module docstring). ``framing``: the tokenizer's
        :class:`~triage_core.longtext.Framing` when the caller has one (read off it otherwise)."""
        config = json.loads(tokenizer.to_str())
        normalizer, pre = config.get("normalizer") or {}, config.get("pre_tokenizer") or {}
        model = config.get("model") or {}
        if (
            normalizer.get("type") != "BertNormalizer"
            or not normalizer.get("clean_text")
            or pre.get("type") != "BertPreTokenizer"
            or model.get("type") != "WordPiece"
            or model.get("unk_token") not in model.get("vocab", {})
        ):
            return None
        framing = framing or Framing(tokenizer)
        if any(framing.head_types) or any(framing.tail_types) or framing.content_type:
            return None
        return cls(
            model["vocab"],
            model["vocab"][model["unk_token"]],
            model.get("continuing_subword_prefix") or "",
            int(model.get("max_input_chars_per_word", 100)),
            bool(normalizer.get("lowercase")),
            framing,
            [token["content"] for token in config.get("added_tokens", [])],
        )

    def takes(self, text: str) -> bool:
        """Whether :meth:`encode` computes ``text`` itself (ASCII, no added token in it)."""
        return text.isascii() and (self.added is None or self.added.search(text) is None)

    def encode(
        self, texts: Sequence[str], max_length: int | None, others: Callable[[list[str]], list]
    ) -> list:
        """Each text's :class:`~triage_core.longtext.Tokens` (int64 ids, type ids 0), cut to
        ``max_length`` ids (None: not cut); texts it does not take, by ``others`` (the tokenizer's
        own batch encoding, which must cut alike), in place."""
        joined = "".join(texts)
        if self.takes(joined):  # the usual batch: one check of the whole
            return self._encode(joined, texts, max_length)
        mine = [self.takes(text) for text in texts]
        out = [None] * len(texts)
        ours = [i for i, yes in enumerate(mine) if yes]
        theirs = [i for i, yes in enumerate(mine) if not yes]
        if ours:
            picked = [texts[i] for i in ours]
            for i, tokens in zip(ours, self._encode("".join(picked), picked, max_length), strict=True):
                out[i] = tokens
        if theirs:
            for i, encoding in zip(theirs, others([texts[i] for i in theirs]), strict=True):
                out[i] = encoding
        return out

    def _encode(self, joined: str, texts: Sequence[str], max_length: int | None) -> list[Tokens]:
        data = np.frombuffer(joined.encode("ascii"), np.uint8)
        lengths = np.fromiter(map(len, texts), np.int64, len(texts))
        specials = len(self.head) + len(self.tail)
        budget = len(joined) if max_length is None else max(max_length - specials, 0)
        ids, offsets = wordpiece_ids(
            data, lengths, self.kind, self.fold, self.starts, self.rests,
            self.head, self.tail, budget, self.max_chars, self.unk_id,
        )  # fmt: skip
        bounds = offsets.tolist()
        longest = int(np.diff(offsets).max(initial=0))
        if len(self._zeros) < longest:  # the type ids: views of one array of zeros
            self._zeros = np.zeros(max(longest, 2 * len(self._zeros)), np.int64)
        zeros = self._zeros
        return [Tokens(ids[a:b], zeros[: b - a]) for a, b in pairwise(bounds)]


@njit(cache=True, nogil=True)
def wordpiece_ids(data, lengths, kind, fold, starts, rests, head, tail, budget, max_chars, unk):
    """The ids of each text (``lengths[t]`` bytes of ``data`` one after another): ``head``, at
    most ``budget`` word pieces, ``tail``. Returns the ids one text after another and where each
    text's start (``offsets``, one more than texts). ``kind``/``fold``: :func:`ascii_classes`;
    ``starts``/``rests``: the tries of word starts and of continuations (term value: the id)."""
    n = len(lengths)
    out = np.empty(len(data) + n * (len(head) + len(tail)), np.int64)  # a piece has >= 1 character
    offsets = np.empty(n + 1, np.int64)
    word = np.empty(max_chars + 1, np.uint8)
    w = 0
    start = 0
    for t in range(n):
        end = start + lengths[t]
        offsets[t] = w
        for k in range(len(head)):
            out[w] = head[k]
            w += 1
        full = w + budget
        i = start
        while i < end and w < full:
            k = kind[data[i]]
            if k <= SPACE:  # dropped or space
                i += 1
                continue
            size = 0  # the word: one punctuation mark, or a run of letters (dropped ones skipped)
            if k == PUNCTUATION:
                word[0] = data[i]
                size = 1
                i += 1
            else:
                while i < end:
                    k = kind[data[i]]
                    if k == LETTER:
                        if size <= max_chars:
                            word[size] = fold[data[i]]
                        size += 1
                    elif k != DROPPED:
                        break
                    i += 1
            if size > max_chars:
                out[w] = unk
                w += 1
                continue
            first = w
            s = 0
            while s < size:  # the longest entry from s, then from where it ends
                state = 1
                found = -1
                found_end = s
                for j in range(s, size):
                    step = transition(starts if s == 0 else rests, state, word[j])
                    if step == 0:
                        break
                    state = step >> 32
                    if step & 0xFFFFFFFF:
                        found = (step & 0xFFFFFFFF) - 1
                        found_end = j + 1
                if found < 0:
                    break
                if w < full:
                    out[w] = found
                w += 1
                s = found_end
            if s < size:  # some rest starts no entry: the whole word is unknown
                w = first
                out[w] = unk
                w += 1
            elif w > full:
                w = full
        for k in range(len(tail)):
            out[w] = tail[k]
            w += 1
        start = end
    offsets[n] = w
    return out[:w], offsets


def compile_now() -> None:
    """Compile (or load from numba's cache) the kernel now (the image build calls this)."""
    empty = np.zeros(0, np.int64)
    trie = Trie([], 128).arrays
    kind, fold = ascii_classes(True)
    wordpiece_ids(np.zeros(0, np.uint8), empty, kind, fold, trie, trie, empty, empty, 0, 100, 0)
