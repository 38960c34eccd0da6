"""Text preprocessing shared by training and serving.

Training, evaluation and the inference server all call :func:`preprocess` with the
:class:`PreprocessConfig` stored in the model artifact, so a ticket is cleaned the same way
when the model learns from it and when it is served (no training/serving skew).

Choices worth knowing:

* Stop words are kept by default. Transformers read function words ("not", "can't",
  "still", "why") as signal; removing them changes meaning ("card not working" ->
  "card working"). The option exists for experiments only.
* Long tickets are cut in two steps: after cleaning, the text is capped at ``max_chars``
  characters (cheap protection against 1 MB tickets), then the tokenizer keeps the first
  ``max_length`` tokens ("head" truncation). The request in a support e-mail is almost always
  near the top once greetings, quoted threads, signatures and footers are stripped, so the
  head is the part worth keeping.
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
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
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
    r"|many thanks\b|cheers[,!.]?\s*$|sincerely\b|sent from my\b|get outlook for\b)",
    re.IGNORECASE,
)
_GREETING = re.compile(
    r"^\s*(?:hi|hello|hey|dear|good (?:morning|afternoon|evening)|greetings|to whom it may concern)"
    r"\b[^.!?\n]{0,40}?(?:[,:!]|$)\s*",
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
    return _GREETING.sub("", body, count=1).strip() or body.strip()


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
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")


def preprocess(text: str, config: PreprocessConfig | None = None) -> str:
    """Clean one ticket. Never raises on odd input; returns '' for empty input."""
    config = config or PreprocessConfig()
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
