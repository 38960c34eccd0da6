"""Text preprocessing shared by training and serving.

Training, evaluation and the inference server all call :func:`preprocess` with the
:class:`PreprocessConfig` stored in the model artifact, so a ticket is cleaned the same way
when the model learns from it and when it is served (no training/serving skew).

Choices worth knowing:

* Stop words are kept by default. Transformers read function words ("not", "can't",
  "still", "why") as signal; removing them changes meaning ("card not working" ->
  "card working"). The option exists for experiments only.
* Long tickets are cut in three steps: the raw text is capped at ``10 * max_chars``
  characters before any regex runs (a pasted 1 MB attachment costs microseconds, not
  seconds), the cleaned text is capped at ``max_chars``, then the tokenizer keeps the first
  ``max_length`` tokens ("head" truncation). The request in a support e-mail is almost always
  near the top once greetings, quoted threads, signatures and footers are stripped, so the
  head is the part worth keeping. All regexes are linear-time (bounded repetitions, anchored
  starts), so the cost per ticket is bounded whatever is pasted into it.
* E-mail replies: mail-parser-reply (``EmailReplyParser``) was tried on the noisy test
  tickets: it cuts ``On ... wrote:`` threads but keeps greetings, sign-offs, device lines,
  footers and forwarded messages, which the rules below also strip. It is not used, which
  also keeps it out of the serving image.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PreprocessConfig(BaseModel):
    """How raw ticket text becomes model input. Stored in every artifact."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unicode_form: Literal["NFKC", "NFC", "none"] = "NFKC"
    emojis: Literal["text", "remove", "keep"] = Field(
        "text", description="text: map an emoji to its name (e.g. 'angry face'); remove; keep"
    )
    mask_pii: bool = Field(True, description="replace e-mails, URLs, card and phone numbers by tokens")
    extract_request: bool = Field(
        True, description="strip greetings, quoted replies, signatures and legal footers"
    )
    remove_stopwords: bool = Field(False, description="experiments only, see module docstring")
    max_chars: int = Field(2000, ge=16, description="cap on cleaned text length, before tokenizing")


# --- PII masking -------------------------------------------------------------------------
EMAIL_TOKEN, URL_TOKEN, CARD_TOKEN, PHONE_TOKEN = "[EMAIL]", "[URL]", "[CARD]", "[PHONE]"
# The look-behind makes a match start only at the beginning of a word: without it, a long run
# of word characters (a pasted base64 blob) is rescanned from every position (quadratic).
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
# 13-19 digits, optionally grouped by spaces or dashes: payment card numbers.
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
# Phone numbers: optional +, 7 to 15 digits with common separators, at least 7 digits.
_PHONE = re.compile(r"(?<![\w])(?:\+|00)?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,5}(?![\w])")


def mask_pii(text: str) -> str:
    text = _EMAIL.sub(EMAIL_TOKEN, text)
    text = _URL.sub(URL_TOKEN, text)
    text = _CARD.sub(CARD_TOKEN, text)

    def _phone(match: re.Match[str]) -> str:
        digits = sum(ch.isdigit() for ch in match.group(0))
        return PHONE_TOKEN if 7 <= digits <= 15 else match.group(0)

    return _PHONE.sub(_phone, text)


# --- e-mail / chat noise -------------------------------------------------------------------
# A quoted thread starts at one of these lines; everything from there on is history.
_QUOTE_START = re.compile(
    r"^\s*(?:>|-{2,}\s*original message\s*-{2,}|on\b.{0,120}\bwrote:\s*$|from:\s|sent:\s"
    r"|-{5,}\s*forwarded message)",
    re.IGNORECASE,
)
# A signature or sign-off starts at one of these lines.
_SIGNOFF = re.compile(
    r"^\s*(?:--\s*$|(?:best|kind|warm)?\s*regards\b|best wishes\b|thanks?(?: you)?(?: in advance)?[,!.]?\s*$"
    r"|many thanks\b|cheers[,!.]?\s*$|sincerely\b|get outlook for\b"
    # device lines: "Sent from my iPhone", "Sent from Yahoo Mail for Android", "Sent with ... app"
    r"|sent (?:from|with|via)\b[^\n]{0,40}?\b(?:iphone|ipad|android|galaxy|samsung|mobile|phone|mail"
    r"|outlook|blackberry|device|tablet|app)\b[^\n]{0,30}$)",
    re.IGNORECASE,
)
# Chat openers without punctuation ("hey there how do I ..."): the greeting word, an optional
# addressee, then punctuation or a space.
_CHAT_GREETING = re.compile(
    r"^\s*(?:hi+|hello+|hey+|hiya|yo|good (?:morning|afternoon|evening|day))"
    r"(?:\s+(?:there|team|all|guys|folks|everyone|support))?(?:[\s,.!:;-]+|$)",
    re.IGNORECASE,
)
# A salutation: the greeting word and at most four more words ("Dear Sir or Madam"), closed by
# punctuation or the end of its line. More words than that are the request itself
# ("hey guys where is my card!!!" must keep "where is my card").
_GREETING = re.compile(
    r"^\s*(?:hi|hello|hey|dear|good (?:morning|afternoon|evening)|greetings|to whom it may concern)"
    r"\b(?:[ \t]+[^\s.!?,:]+){0,4}?[ \t]*(?:[,:!]+|(?=\n)|$)\s*",
    re.IGNORECASE,
)
_FOOTER = re.compile(
    r"(?:this (?:e-?mail|message)[^.]{0,80}\b(?:confidential|intended (?:solely|only))"
    r"|confidentiality notice|disclaimer:|please consider the environment"
    r"|unsubscribe\b)",
    re.IGNORECASE,
)


def extract_request(text: str) -> str:
    """Keep the new request of an e-mail or chat ticket; drop greeting, thread, sign-off, footer."""
    kept: list[str] = []
    for line in text.splitlines():
        if _QUOTE_START.match(line) or _SIGNOFF.match(line) or _FOOTER.search(line):
            if kept:  # a sign-off before any content (e.g. "Thanks!") is only skipped
                break
            continue
        kept.append(line)
    body = "\n".join(kept) if kept else text
    stripped = _GREETING.sub("", body, count=1).strip()
    stripped = _CHAT_GREETING.sub("", stripped, count=1).strip()
    return stripped or body.strip()


# --- emojis, unicode, whitespace -------------------------------------------------------------
@lru_cache(maxsize=1)
def _emoji_module():  # imported lazily: only needed when a ticket has non-ASCII symbols
    import emoji

    return emoji


def _emojis(text: str, mode: str) -> str:
    if mode == "keep" or text.isascii():
        return text
    emoji = _emoji_module()
    if mode == "remove":
        return emoji.replace_emoji(text, replace=" ")

    def _name(_: str, data: dict) -> str:
        return " " + data["en"].strip(":").replace("_", " ") + " "

    return emoji.replace_emoji(text, replace=_name)


_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "by",
        "from",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "am",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "as",
        "so",
        "do",
        "does",
        "did",
        "has",
        "have",
        "had",
    ]
)
_WS = re.compile(r"\s+")
_RAW_CAP_FACTOR = 10  # raw text kept before cleaning: 10 x max_chars (see the module docstring)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")


def preprocess(text: str, config: PreprocessConfig | None = None) -> str:
    """Clean one ticket. Never raises on odd input; returns '' for empty input."""
    config = config or PreprocessConfig()
    text = text[: config.max_chars * _RAW_CAP_FACTOR]
    if config.unicode_form != "none":
        text = unicodedata.normalize(config.unicode_form, text)
    text = _CONTROL.sub(" ", text)
    if config.extract_request:
        text = extract_request(text)
    if config.mask_pii:
        text = mask_pii(text)
    text = _emojis(text, config.emojis)
    text = _WS.sub(" ", text).strip()
    if config.remove_stopwords:
        text = " ".join(w for w in text.split(" ") if w.lower() not in _STOPWORDS)
    return text[: config.max_chars]


def preprocess_batch(texts: list[str], config: PreprocessConfig | None = None) -> list[str]:
    config = config or PreprocessConfig()
    return [preprocess(t, config) for t in texts]
