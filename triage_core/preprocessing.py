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
* Cheap exact pre-checks (issue #23): most patterns only run on text holding a character or
  word they cannot match without (a ":" for a reply header, "sent" for a device line, a digit,
  "@" or URL start for the PII scanner, an emoji character for the emoji library), and a
  one-line ticket skips the e-mail rules, whose result it provably is. Each is argued where it
  sits; tests/core/test_preprocessing_equivalence.py compares the output with the
  implementation before them, frozen in tests/core/data/. A change meant to change the output
  changes every artifact's input: it has to replace that reference, deliberately.
* E-mail replies: mail-parser-reply (``EmailReplyParser``) was tried on the noisy test
  tickets: it cuts ``On ... wrote:`` threads but keeps greetings, sign-offs, device lines,
  footers and forwarded messages, which the rules below also strip. It is not used, which
  also keeps it out of the serving image.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
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
ACCOUNT_TOKEN = "[ACCOUNT]"  # IBANs and bare 6-12 digit runs: account, customer or reference numbers
# One scanner, alternatives in priority order: at each position the first that matches wins, so
# a date, a time or an amount is recognised (and kept as written) before the card, phone and
# account patterns can claim its digits. Every repetition is bounded and every alternative
# starts at a word boundary or a fixed character, so the scan is linear in the text length.
_PII = re.compile(
    # e-mail; the look-behind makes a match start only at the beginning of a word (without it a
    # pasted base64 blob is rescanned from every position: quadratic)
    r"(?P<email>(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8})"
    r"|(?P<url>(?:https?://|www\.)\S{1,2000})"
    r"|(?P<iban>\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b)"
    # kept: 12.03.2024, 2024-03-12, 3/12/24; 10:14; 25.00, €1,500, 40 euros, GBP 12
    r"|(?P<date>\b\d{1,4}[./-]\d{1,2}[./-]\d{2,4}\b)"
    r"|(?P<time>\b\d{1,2}:\d{2}(?::\d{2})?\b)"
    r"|(?P<amount>(?:[$€£¥]|\b(?:USD|EUR|GBP|CHF)\s?)\d{1,3}(?:[,.\s]?\d{3}){0,4}(?:[.,]\d{1,2})?"
    r"|\b\d{1,3}(?:[,.]?\d{3}){0,4}(?:[.,]\d{1,2})?\s?(?:[$€£¥]|(?:usd|eur|gbp|chf|euros?|pounds?"
    r"|dollars?|quid|cents?|pence)\b)|\b\d{1,9}[.,]\d{2}\b)"
    # payment card numbers: 13-19 digits in one run, or in the printed groups 4-4-4-4(-3) / 4-6-5
    r"|(?P<card>\b(?:\d{13,19}|\d{4}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{1,4}(?:(?P=sep)\d{1,3})?"
    r"|\d{4}(?P<amex>[ -])\d{6}(?P=amex)\d{5})\b)"
    # phone numbers look like phone numbers: +country, (area code), or a national 0 prefix
    # followed by separated groups (an unseparated 0123456789 is an account number);
    # or 555-123-4567. 7 to 15 digits (checked below).
    r"|(?P<phone>(?:\+\d{1,3}(?:[ .-]?\(?\d{2,6}\)?){1,5}|\(\d{2,5}\)(?:[ .-]?\d{2,6}){1,4}"
    r"|\b0\d{1,5}(?:[ .-]\(?\d{2,6}\)?){1,4})(?![\w])"
    r"|\b\d{3}[.-]\d{3}[.-]\d{4}\b)"
    r"|(?P<account>\b\d{6,12}\b)",
    re.IGNORECASE,
)
_TOKEN_OF = {"email": EMAIL_TOKEN, "url": URL_TOKEN, "iban": ACCOUNT_TOKEN, "card": CARD_TOKEN}
# Every alternative of _PII needs a digit, an "@" or a URL's "www." / "http(s)://", a few
# characters from where it starts: the scanner (an alternation tried at every position, slow in
# `re`: ~0.35 us per character) runs only at those places (_pii_matches, issue #23).
_DIGITS = re.compile(r"\d+")
_ASCII_DIGITS = re.compile(r"[0-9]+")
# What can stand 1, 2, 3 or 4 characters before a run of digits where a match starts (an amount's
# "$"/"€"/"£"/"¥", a phone's "+"/"(", an IBAN's first letter, an amount's "USD"/"EUR"/"GBP"/"CHF",
# followed by a digit or by one whitespace and a digit): the characters re.IGNORECASE matches
# them with (tests check each set against `re` over every code point).
_IGNORECASE_AZ = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyzİıſ\u212a"
_BEFORE_DIGITS = ((1, "$€£¥+("), (2, _IGNORECASE_AZ), (3, "UEGCuegc"), (4, "UEGCuegc"))
_LOCAL_START = re.compile(r"(?<![\w.+-])[\w.+-]")  # where the e-mail alternative can start
_URL_STARTS = ("http://", "https://", "www.")
# What re.IGNORECASE matches an ASCII letter with, besides its two cases: İ and ı (i), ſ (s) and
# U+212A KELVIN SIGN (k) (the `re` docs; checked over every code point in the tests). str.lower()
# maps A-Z and the Kelvin sign to the letter and keeps one character per character, except İ
# (two: "i̇"); the translation below makes İ, ı and ſ their letters first.
_FOLD_SPECIALS = str.maketrans("İıſ", "iis")


def _fold(text: str) -> str:
    """``text`` lowercased with one character per character, each character that an
    IGNORECASE pattern's ASCII letter matches turned into that letter: an ASCII word matches
    somewhere in ``text`` under IGNORECASE only if it is a substring of ``_fold(text)``, at the
    same index."""
    if not text.isascii() and ("İ" in text or "ı" in text or "ſ" in text):
        text = text.translate(_FOLD_SPECIALS)
    return text.lower()


def _pii_matches(text: str) -> list[re.Match[str]]:
    """``list(_PII.finditer(text))``, trying the scanner only where a match can start.

    Every alternative of _PII holds a digit, an "@" or a URL start, at a bounded distance from
    where it starts: an e-mail starts at a word start at most 64 characters before its "@"
    (``_LOCAL_START``); a URL at its "http(s)://" or "www."; an IBAN two letters before its
    first digit, an amount at most four characters before one ("USD " + digit), a phone number
    one ("+" or "(") and every other alternative at a digit: at most four characters before the
    first digit of a run of digits (where that character is one those alternatives start with:
    ``_BEFORE_DIGITS``), or at it (inside a run, where a digit follows a digit, every alternative
    fails: none starts with a digit but after ``\b``, and the e-mail's look-behind refuses a word
    character before it). So every match starts at one of the candidates below,
    and ``_PII.match(text, p)`` sees the whole text (look-behinds and ``\b`` before ``p``) as the
    scanner does there; _PII matches no empty string, so after a match ending at ``e`` the next
    one is the first candidate ``>= e`` where the scanner matches, as in finditer. A text
    without a digit, "@" or URL start has no candidate: nothing to mask."""
    candidates: set[int] = set()
    # \d is 0-9 in an ASCII text: ten substring tests (memchr) are ~5x cheaper than a scan by `re`
    if not text.isascii():
        runs = _DIGITS.finditer(text)
    elif (
        "0" in text or "1" in text or "2" in text or "3" in text or "4" in text
        or "5" in text or "6" in text or "7" in text or "8" in text or "9" in text
    ):  # fmt: skip
        runs = _ASCII_DIGITS.finditer(text)
    else:
        runs = iter(())
    for run in runs:
        first = run.start()
        candidates.add(first)
        for back, chars in _BEFORE_DIGITS:
            if first >= back and text[first - back] in chars:
                candidates.add(first - back)
    at, after_previous = text.find("@"), 0  # a local part holds no "@": windows never overlap
    while at >= 0:
        window = _LOCAL_START.finditer(text, max(after_previous, at - 64), at)
        candidates.update(m.start() for m in window)
        at, after_previous = text.find("@", at + 1), at + 1
    # "http(s)://" holds "://", "www." a "." and a "w" or "W" (IGNORECASE matches "w" with nothing else)
    if "://" in text or ("." in text and ("w" in text or "W" in text)):
        folded = _fold(text)
        for start in _URL_STARTS:
            index = folded.find(start)
            while index >= 0:
                candidates.add(index)
                index = folded.find(start, index + 1)
    if not candidates:
        return []
    found = []
    end = 0
    for position in sorted(candidates):
        if position >= end and (match := _PII.match(text, position)):
            found.append(match)
            end = match.end()
    return found


def _pii_sub(
    replacement: str | Callable[[re.Match[str]], str], text: str, matches: list[re.Match[str]] | None = None
) -> str:
    """``_PII.sub(replacement, text)`` through :func:`_pii_matches` (or its ``matches``)."""
    parts = []
    end = 0
    for match in _pii_matches(text) if matches is None else matches:
        parts.append(text[end : match.start()])
        parts.append(replacement if isinstance(replacement, str) else replacement(match))
        end = match.end()
    if not parts:
        return text
    parts.append(text[end:])
    return "".join(parts)


def _pii(match: re.Match[str]) -> str:
    kind, text = match.lastgroup, match.group(0)
    if kind in _TOKEN_OF:
        return _TOKEN_OF[kind]
    if kind == "phone":
        return PHONE_TOKEN if 7 <= sum(ch.isdigit() for ch in text) <= 15 else text
    if kind == "account":
        return ACCOUNT_TOKEN
    return text  # date, time, amount: content, not personal data


def mask_pii(text: str) -> str:
    """E-mails, URLs, card, phone and account numbers become tokens; dates, times and amounts stay."""
    return _pii_sub(_pii, text)


# --- e-mail / chat noise -------------------------------------------------------------------
# The rules below were written and tuned on training.noise's "train" and "dev" pools, and one
# structural rule (a sign-off and a name above a footer no rule knows) came from the misses on the
# noisy validation ("select"); the noisy evaluation uses the held-out "eval" pool, which no rule
# was tuned on (docs/training.md, "Noisy tickets").
# They recognise the *structure* of an e-mail (a reply header, a closing line followed by a name,
# a contact line, a device line, a legal footer at the end), not a list of phrasings, and they
# only ever cut the end of a message: a line that merely starts like a header ("From: the app it
# shows two payments") or a closing word in the middle of the text never ends the ticket.
# Some client formats (Zoho's "---- On ... wrote ----", a header wrapped over three lines, a device
# line above a header-less history, a bottom post, a mailing-list footer) came from real clients'
# e-mails (tests/core/test_real_client_emails.py); the one exception to "only the end is cut" is
# the bottom post: with nothing but a greeting above the quote, the reply is what follows it.
# Issue #20 made them stricter about what is *certainly* noise, and keep the rest: a header block
# needs a dated "Sent:"/"Date:" field and an address (or a named sender and a "Subject:"), so
# transfer details written as "From:"/"To:" lines are content; a device line names only a device
# or app ("Sent from my account 3 days ago ..." is a sentence); a "--" line starts a signature
# only above a short block that neither asks nor speaks in the first person; and a P.S. is always
# kept (the sign-off above it is cut).

# The start of a quoted thread: everything from here on is history.
_REPLY_HEADER = re.compile(
    r"^\s*(?:on\b.{0,160}\bwrote:\s*$"  # Gmail / Apple Mail / Thunderbird
    r"|-{2,}\s*original message\s*-{2,}"  # Outlook
    r"|-{2,}\s*on\b.{0,160}\bwrote\s*-{2,}\s*$"  # Zoho Mail: "---- On <date> <address> wrote ----"
    r"|-{3,}\s*forwarded message\s*-{3,}|begin forwarded message:)",  # Gmail / Apple Mail forwards
    re.IGNORECASE,
)
# The fields of a quoted or forwarded message's header block (Outlook's "From: / Sent: / To: /
# Subject:", Gmail's and Apple Mail's "From: / Date: / ..."; what makes a block: _header_block_at).
# The field names in the languages of talon's fixtures (English, German, French, Danish, Norwegian,
# Swedish, Dutch, Polish, Spanish, Italian, Russian); Gmail's plain-text part may star them ("*From:*").
_SENDER_FIELDS = ("from", "von", "de", "fra", "från", "van", "od", "da", "от")
_DATE_FIELDS = ("sent", "date", "gesendet", "datum", "envoyé", "sendt", "skickat", "verzonden", "enviado")
_DATE_FIELDS += ("inviato", "wysłano", "data", "fecha", "отправлено")
_OTHER_FIELDS = ("to", "an", "à", "til", "till", "aan", "do", "para", "a", "кому", "cc", "bcc", "reply-to")
_SUBJECT_FIELDS = ("subject", "betreff", "objet", "emne", "ämne", "onderwerp", "temat", "asunto", "oggetto")
_SUBJECT_FIELDS += ("тема",)
_OTHER_FIELDS += _SUBJECT_FIELDS
_HEADER_FIELD = re.compile(
    r"^\s*\*?(?P<field>"
    + "|".join(_SENDER_FIELDS + _DATE_FIELDS + _OTHER_FIELDS)
    + r")\*? ?:\*?[ \t]*(?P<value>.*)$",
    re.IGNORECASE,
)
_ADDRESS = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}|\[EMAIL\]")
_HEADER_DATE = re.compile(
    r"\b(?:19|20)\d\d\b|\b\d{1,2}:\d{2}\b|\b(?:mon|tue|wed|thu|fri|sat|sun)[a-z]{0,6}\b", re.IGNORECASE
)
# Reply headers of other languages and clients. A line (or two or three wrapped lines) ending in
# "<someone> wrote:" in a language ("schrieb", "a écrit", "skrev", "napisał", "đã viết", ...)
# with a date, a time or an address in it; Android's "---- <name> wrote ----"; English
# "On <date>, <name> <address> sent:"; Gmail's "2014-10-17 11:28 GMT+03:00 <name> <address>:";
# and the "-----Original Message-----" separator in other languages.
_WROTE = (
    r"(?:wrote|schrieb|a écrit|escribió|ha scritto|scrisse|schreef|geschreven|skrev|napisał|napisała|đã viết"
    r"|написал|написала|kirjoitti|escreveu)"
)
_BRACKETED_ADDRESS = r"[<(\[]\s?(?:mailto:)?[^<>()\s]{1,200}@[^<>()\s]{1,200}\s?[>)\]]"
_OTHER_REPLY_HEADER = re.compile(
    r"^\s*(?:am|le|el|il|op|den|på|w dniu|dnia|vào|em|в|\d)\b.{0,240}\b" + _WROTE + r"\b.{0,120}:\s*$"
    r"|^\s*\S.{0,160}" + _BRACKETED_ADDRESS + r"\s*" + _WROTE + r":\s*$"
    r"|^\s*-{2,}\s*\S.{0,160}\b" + _WROTE + r"\s*-{2,}\s*$"
    r"|^\s*on\b.{0,160}" + _BRACKETED_ADDRESS + r"\s*sent:\s*$"
    r"|^\s*\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b.{0,160}" + _BRACKETED_ADDRESS + r"\s*:\s*$"
    r"|^\s*-{2,}\s*(?:original message|reply message|ursprüngliche nachricht|antwort nachricht"
    r"|oprindelig meddelelse|message d'origine|mensaje original|messaggio originale|oorspronkelijk bericht"
    r"|originalmeddelande|opprinnelig melding|wiadomość oryginalna|исходное сообщение)\s*-{2,}",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"^\s*>")
_SIG_DELIMITER = re.compile(r"^\s*--\s*$")
_ALNUM = re.compile(r"[^\W_]")  # what str.isalnum() accepts (`re`'s \w is that and "_"; tested)
# A postscript: content, wherever it sits (often under the signature, with a second request).
_POSTSCRIPT = re.compile(r"^\s*p\.?\s?p?\.?\s?s\b\.?", re.IGNORECASE)
# Legal and mailing-list footers: their vocabulary, wherever they sit in the last lines.
_FOOTER = re.compile(
    r"\b(?:confidential|privileged|intended (?:solely |only )?for|intended recipient|disclaimer"
    r"|unsubscribe|consider the environment|legally binding|virus(?:es)? (?:scan|check))",
    re.IGNORECASE,
)
# A mailing-list footer (Mailman): "<list-name> mailing list", then the list's address and URL.
# Only the whole line: "please take me off your mailing list" is a request.
_LIST_FOOTER = re.compile(r"^\s*[\w.-]{1,60} mailing list\s*$", re.IGNORECASE)
# What _FOOTER and _LIST_FOOTER cannot match without, looked for in _fold(line): the unanchored
# _FOOTER search (an alternation tried at every position) runs only on lines holding one.
_FOOTER_WORDS = ("confidential", "privileged", "intended ", "disclaimer", "unsubscribe", "consider the")
_FOOTER_WORDS += ("legally binding", "virus", " mailing list")


def _is_footer(line: str) -> bool:
    """``_FOOTER.search(line) or _LIST_FOOTER.match(line)``."""
    folded = _fold(line)
    for word in _FOOTER_WORDS:
        if word in folded:
            return bool(_FOOTER.search(line) or _LIST_FOOTER.match(line))
    return False


# Device and client lines: "Sent from my iPhone", "Sent with Proton Mail", "Get Outlook for iOS".
# After "Sent from/with/via/using" come only a device or app: names (a capital or a digit:
# "iPhone 14", "Wiko RIDGE FAB 4G", "TypeApp") and a few client words ("phone", "secure email",
# "on Android"). "Sent from my account 3 days ago and still not received" is a sentence.
_APP_LINE = re.compile(r"^\s*(?:get \w+ for (?:ios|android)\b|download \w+ for\b).{0,60}$", re.IGNORECASE)
_SENT_FROM = re.compile(r"^\s*sent (?:from|with|via|using)\s+(?P<what>\S.{0,60})$", re.IGNORECASE)
_CLIENT_NOUNS = frozenset(
    ("phone", "mobile", "smartphone", "tablet", "device", "mail", "email", "e-mail", "app")
)
_CLIENT_FILLERS = frozenset(("my", "the", "a", "an", "secure", "on", "for", "application"))
# A phone's device line as its own paragraph with more text under it ("Sent from my <device>",
# a blank line, then the message replied to): the history starts there, header or not. Short and
# without sentence punctuation: "Sent from my phone, the app shows ..." is a request.
_DEVICE_BOUNDARY = re.compile(r"^\s*Sent from my [^\W_][^\n.,;:!?]{0,40}$")
# Contact lines of a signature: "Mobile: +44 ...", "Tel. 0123 ...", "E: jane@example.com".
_CONTACT = re.compile(
    r"^\s*(?:mobile|mob|cell|tel|phone|fax|m|t|e|email|e-mail|web)\s*[:.]\s*\S.{0,60}$", re.IGNORECASE
)
# A closing: a short line ending in a comma ("Best regards,", "Yours truly,"), or a thank-you.
_CLOSING_COMMA = re.compile(r"^\s*[^\W\d_][^\n?!:;]{0,30},\s*$")
_THANKS = re.compile(r"^\s*(?:thanks?|thank you|thx|ty|cheers|regards|best)\b[^\n?]{0,40}$", re.IGNORECASE)
_PERSONAL = re.compile(r"\b(?:i|i'm|i've|my|me|we|our)\b", re.IGNORECASE)
# A name or title line under a closing: one to four capitalised words, no digits.
_NAME = re.compile(r"^\s*[^\W\d_][\w.'’-]{0,30}(?:[ \t]+[^\W\d_][\w.'’-]{0,30}){0,3}\s*$")


def _is_device(line: str) -> bool:
    if _APP_LINE.match(line):
        return True
    # _SENT_FROM needs "sent" (IGNORECASE) in the masked line; masking puts a space where it cuts,
    # so those four letters stand together in the line itself (the cheap check, see _fold).
    if "sent" not in _fold(line):
        return False
    match = _SENT_FROM.match(_pii_sub(" ", line))
    if not match:
        return False
    words = [w.strip("()[]<>.,;:!-") for w in match.group("what").split()]
    words = [w for w in words if w and w.lower() not in _CLIENT_FILLERS]
    return bool(words) and all(
        w.lower() in _CLIENT_NOUNS or w != w.lower() or any(c.isdigit() for c in w) for w in words
    )


def _is_reply_header(text: str) -> bool:
    # Every alternative of both patterns starts (after \s*, what lstrip strips) with "-" or holds
    # a ":" ("wrote:", "sent:", "<address>:", "begin forwarded message:"): most lines have neither.
    if ":" not in text and not text.lstrip().startswith("-"):
        return False
    if _REPLY_HEADER.match(text):
        return True
    match = _OTHER_REPLY_HEADER.match(text)
    if not match:
        return False
    # "... wrote:" in a language: only with a date, a time or an address in the line
    return bool(
        _HEADER_DATE.search(text) or re.search(_BRACKETED_ADDRESS, text) or text.lstrip().startswith("-")
    )


def _header_block_at(lines: list[str], i: int) -> bool:
    """A quoted message's header block starts at ``lines[i]``: consecutive header fields (an
    address wrapped onto its own line allowed) with a "Sent:"/"Date:" field dated with a year, a
    time or a weekday, and either an address or a sender ("From:") and a "Subject:" (Outlook's
    "From: Name / Sent: ... / To: Name / Subject: ..." has no address). Payment details written
    as fields ("From: John Smith / Date: 12 March 2025 / Amount: 50 EUR") are none of these."""
    dated = sender = address = subject = False
    fields = 0
    for line in lines[i : i + 8]:
        field = _HEADER_FIELD.match(line)
        if field is None:
            if fields and _ADDRESS.search(line) and len(line.split()) <= 2:  # "From: Name" / "<address>"
                address = True
                continue
            break
        fields += 1
        name, value = field.group("field").lower(), field.group("value").strip().strip('"*')
        address = address or bool(_ADDRESS.search(value))
        if name in _DATE_FIELDS:
            dated = dated or bool(_HEADER_DATE.search(value))
        elif name in _SENDER_FIELDS:
            sender = sender or bool(value and _is_name(value))
        elif name in _SUBJECT_FIELDS:
            subject = True
    return fields >= 2 and dated and (address or (sender and subject))


def _is_closing(line: str) -> bool:
    # the anchored patterns first (_CLOSING_COMMA ends in a ","), the unanchored _PERSONAL search
    # only where one matched
    if not (("," in line and _CLOSING_COMMA.match(line)) or _THANKS.match(line)):
        return False
    return 1 <= len(line.split()) <= 6 and not _PERSONAL.search(line)


def _is_name(line: str) -> bool:
    return bool(_NAME.match(line)) and all(w[0].isupper() for w in line.split() if w[0].isalpha())


def _is_contact(line: str) -> bool:
    """A signature's contact line: a labelled value ("Mobile: ..."), or phone numbers and
    addresses next to at most a name ("Jane Doe | +44 ...")."""
    if _CONTACT.match(line):
        return True
    if len(line) > 120:
        return False
    matches = _pii_matches(line)
    if not any(m.lastgroup in ("email", "url", "phone", "card") for m in matches):
        return False
    rest = _pii_sub(" ", line, matches)
    rest = re.sub(r"[|,;/•·:()\[\]-]+", " ", rest).strip()
    return not rest or _is_name(rest)


def _quote_start(lines: list[str]) -> int:
    """Index of the first line of quoted history (a reply/forward header, or a device line
    between the reply and the history), or ``len(lines)``."""
    # Only lines near a ":", a "-" or "Sent from my" can start the history: a reply header holds
    # a ":" or starts with "-" (_is_reply_header), and so does one joined from two or three lines
    # (its first line stripped and not empty: the joined text starts as that line does), so the
    # two-line check needs one at i or i + 1 (gated below) and the three-line one at i .. i + 2;
    # a device line holds "Sent from my" (_DEVICE_BOUNDARY) and a header block starts with a
    # field ("From:"). The other indexes would find nothing: they are skipped.
    colon = [":" in line for line in lines]
    marked = [i for i, line in enumerate(lines) if colon[i] or "-" in line or "Sent from my" in line]
    for i in sorted({j for m in marked for j in (m - 2, m - 1, m) if j >= 0}):
        line = lines[i]
        if _is_reply_header(line):
            return i
        # "On Tue, 3 Mar 2025 at 10:14, Customer Care <...>" + "wrote:" on the next line (unless
        # the next line is a header on its own: then the history starts there, not here)
        if i + 1 < len(lines) and (colon[i] or colon[i + 1] or line.lstrip().startswith("-")):
            two = [w.strip() for w in lines[i : i + 2]]
            if all(two) and not _is_reply_header(two[1]) and _is_reply_header(" ".join(two)):
                return i
        # Apple Mail wraps it around the address: "On ..., Name" / "<address>" / "wrote:"
        # (stripping keeps an "@" or "[EMAIL]": the window is built only where it has one)
        address = i + 2 < len(lines) and ("@" in lines[i + 1] or EMAIL_TOKEN in lines[i + 1])
        window = [w.strip() for w in lines[i : i + 3]] if address else []
        if (
            address
            and all(window)
            and not _is_reply_header(" ".join(window[1:]))
            and _is_reply_header(" ".join(window))
        ):
            return i
        # "Sent from my <device>" between blank lines, the reply above it and more text below
        if (
            "Sent from my" in line
            and _DEVICE_BOUNDARY.match(line)
            and _is_device(line)
            and 0 < i < len(lines) - 2
            and not lines[i - 1].strip()
            and not lines[i + 1].strip()
            and any(w.strip() for w in lines[:i])
            and any(w.strip() for w in lines[i + 2 :])
        ):
            return i
        if colon[i] and _header_block_at(lines, i):
            return i
    return len(lines)


def _signature_start(lines: list[str]) -> int:
    """Index where the trailing signature block starts (closing, name, contact, device and
    footer lines at the end of the message), or ``len(lines)`` if there is none. A "-- "
    delimiter line (RFC 3676) in the last lines starts a signature when what follows it is a
    signature: a few short lines that neither ask nor speak in the first person. A "--" between
    two parts of a request is not one."""
    for i in range(len(lines) - 1, max(-1, len(lines) - 10), -1):
        if "--" in lines[i] and _SIG_DELIMITER.match(lines[i]):
            if not _is_signature_block(lines[i + 1 :]):
                break
            return _signature_start(lines[:i]) if i else 0
    cut = len(lines)
    names = 0  # name/title lines seen below: only a closing or a delimiter above makes them noise
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip()
        if not _ALNUM.search(line):  # blank, or a rule such as "_____" or "====="
            continue
        if _is_closing(line):
            return i
        if _is_footer(line) or _is_device(line) or _is_contact(line):
            if names == 0:
                cut = i
            continue
        if _is_name(line) and names < 3 and len(lines) - i <= 8:
            names += 1
            continue
        break
    if cut == len(lines):
        return _signed_off_at(lines)
    return cut


def _speaks(line: str) -> bool:
    """The line asks something or speaks in the first person (addresses and links aside)."""
    rest = _pii_sub(" ", line)
    return "?" in rest or bool(_PERSONAL.search(rest))


def _is_signature_block(lines: list[str]) -> bool:
    body = [line.strip() for line in lines if line.strip()]
    if not body or len(body) > 8:
        return False
    for line in body:
        if _is_footer(line) or _is_device(line) or _is_contact(line):
            continue
        if _speaks(line) or len(line.split()) > 8:
            return False
    return True


def _signed_off_at(lines: list[str]) -> int:
    """A closing line followed by a name line (blank lines between them allowed), in the last
    lines and below some body, starts the signature even when the lines under the name are a
    footer no rule knows: what follows a sign-off is the sender's block, unless it speaks in the
    first person or asks something ("P.S. my card ends in 1234?" is content, and keeps everything)."""
    for i in range(len(lines) - 2, max(0, len(lines) - 9), -1):
        if not _is_closing(lines[i].strip()):
            continue
        name = next((j for j in range(i + 1, len(lines)) if lines[j].strip()), len(lines))
        if name == len(lines) or not _is_name(lines[name].strip()):
            continue
        below = [line for line in lines[name + 1 :] if not (_is_device(line) or _is_contact(line))]
        if not any(_PERSONAL.search(line) or "?" in line for line in below):
            return i
        return len(lines)
    return len(lines)


def extract_request(text: str) -> str:
    """Keep the new request of an e-mail or chat ticket; drop greeting, quoted thread, sign-off,
    signature, device line and footer. Content is only ever cut at the end of the message, except
    in a bottom post (nothing but a greeting above the quote): then the reply is under the quote;
    and a P.S. under a signature is kept while the signature is cut."""
    lines = text.splitlines()
    if len(lines) <= 1:
        # One line (or none): every rule below keeps or cuts whole lines, and whichever it cuts,
        # the text falls back to ``text.strip()`` (the only line, stripped: a line break at its end
        # is whitespace to str.strip): _quote_start is 0 (a reply header) or 1 (a header block
        # needs two field lines); with 0, the "bottom post" and "only a closing" branches find
        # nothing below or keep the line; with 1, _reply keeps the line or ("quoted", a closing,
        # a footer, device or contact line) cuts it and ``body or text.strip()`` takes it back.
        # Either way the result is this one (the rules' predicates are pure: skipping them
        # changes nothing). Checked against the frozen rules in test_preprocessing_equivalence.py.
        body = text.strip()
        return _drop_greeting(body) or body
    start = _quote_start(lines)
    body = _reply(lines[:start])
    request = _drop_greeting(body)
    if not request and start < len(lines):  # a bottom post: the reply is under the quote
        below = _reply(_below_quote(lines[start:]))
        request = _drop_greeting(below) or below  # a reply that is only "Hello" is still the reply
    if request:
        return request
    if not body and start < len(lines):  # only a closing above the history ("Thanks Thanmai")
        top = "\n".join(line for line in lines[:start] if not _QUOTED.match(line)).strip()
        body = top if _drop_greeting(top) else ""  # only a greeting: nothing to take, keep it all
    body = body or text.strip()
    return _drop_greeting(body) or body


def _reply(lines: list[str]) -> str:
    # interleaved quotes are history too (a quote holds a ">", a P.S. a "p" or "P": re.IGNORECASE
    # matches "p" with nothing else; the patterns run only on lines that hold them)
    lines = [line for line in lines if ">" not in line or not _QUOTED.match(line)]
    # A P.S. is content: the signature above it is cut, the postscript kept (its own signature
    # lines, if any, are cut too). Each P.S. (but a first line) closes the part above it, which is
    # read the same way: a loop, not a recursion (a ticket of 1,000 "P.S." lines hit Python's
    # recursion limit), each part joined and stripped in turn as the recursion did.
    starts = [
        i
        for i in range(1, len(lines))
        if ("p" in lines[i] or "P" in lines[i]) and _POSTSCRIPT.match(lines[i])
    ]
    ends = [*starts[1:], len(lines)] if starts else []
    postscripts = []
    for start, end in zip(starts, ends, strict=True):
        postscript = lines[start:end]
        postscripts.append(postscript[: max(1, _signature_start(postscript))])
    lines = lines[: starts[0]] if starts else lines
    lines = lines[: _signature_start(lines)]
    while len(lines) > 1 and (not lines[0].strip() or _is_closing(lines[0])):  # "Thanks!\nWhere ..."
        lines = lines[1:]
    reply = "\n".join(lines).strip()
    for postscript in postscripts:
        reply = "\n".join([reply, *postscript]).strip()
    return reply


def _below_quote(lines: list[str]) -> list[str]:
    """A bottom post's reply: ``lines`` start with a reply header (wrapped over up to three lines)
    directly followed by ``>`` lines; the unquoted lines after them, up to the next header, are
    the reply. Nothing if the quote is not ``>`` lines."""
    first = next((i for i, line in enumerate(lines) if _QUOTED.match(line)), len(lines))
    if first == len(lines) or sum(1 for line in lines[1:first] if line.strip()) > 2:
        return []
    below = [line for line in lines[first:] if not _QUOTED.match(line)]
    return below[: _quote_start(below)]


def _drop_greeting(body: str) -> str:
    stripped = _drop_salutation(body)
    return _CHAT_GREETING.sub("", stripped, count=1).strip()


def _drop_salutation(body: str) -> str:
    """Drop "Dear Sir or Madam," / "Hello team," at the start; keep "hey i've got the card, ..."
    and "good evening I bought something abroad, ...": words that are not an addressee (the
    first person, a date, any lowercase word but a few addressee words) make it the request."""
    match = _GREETING.match(body)
    if not match:
        return body
    words = re.findall(r"[^\s.!?,:]+", match.group("addressee"))
    if all(_is_addressee(w) for w in words):
        return body[match.end() :].strip()
    return body


def _is_addressee(word: str) -> bool:
    lower = word.lower()
    if lower in _ADDRESSEE_WORDS:
        return True
    return word[0].isupper() and lower not in _NOT_A_NAME and not _PERSONAL.fullmatch(word)


# Chat openers without punctuation ("hey there how do I ..."): the greeting word, an optional
# addressee, then punctuation or a space.
# "there" is an addressee ("hey there, ...", "hi there Can I ...") unless a lowercase verb follows
# it: "hey there must have been a mistake" and "helloo There is a withdrawal waiting" start their
# request with it.
_CHAT_GREETING = re.compile(
    r"^\s*(?:hi+|hello+|hey+|hiya|yo|good (?:morning|afternoon|evening|day))(?:[ \t]+(?:hi+|hello+|hey+))?"
    r"(?:\s+(?:there(?![ \t]+(?-i:(?:is|are|was|were|has|have|had|seems?|appears?|used)\b"
    r"|(?:should|must|might|may|will|would|can|could)[ \t]+(?:be|have|not)\b))"
    r"|team|all|guys|folks|everyone|support))?(?:[\s,.!:;-]+|$)",
    re.IGNORECASE,
)
# A salutation: the greeting word and at most four more words ("Dear Sir or Madam"), closed by
# punctuation or the end of its line. More words than that are the request itself
# ("hey guys where is my card!!!" must keep "where is my card").
_GREETING = re.compile(
    r"^\s*(?:hi|hello|hey|dear|good (?:morning|afternoon|evening)|greetings|to whom it may concern)"
    r"\b(?P<addressee>(?:[ \t]+[^\s.!?,:]+){0,4}?)[ \t]*(?:[,:!]+|(?=\n)|$)\s*",
    re.IGNORECASE,
)
# Lowercase words an addressee is made of ("dear sir or madam", "hello everyone", "hello hello");
# capitalised words are names ("Dear Jane Doe") unless they are the first person (_PERSONAL),
# a date or a question word.
_ADDRESSEE_WORDS = frozenset(
    [
        "hi",
        "hello",
        "hey",
        "all",
        "there",
        "team",
        "everyone",
        "everybody",
        "folks",
        "guys",
        "sir",
        "sirs",
        "madam",
        "or",
        "and",
        "support",
    ]
)
_NOT_A_NAME = frozenset(
    [
        "i'd",
        "i'll",
        "last",
        "this",
        "next",
        "yesterday",
        "today",
        "tomorrow",
        "since",
        "when",
        "why",
        "what",
        "how",
        "where",
        "can",
        "could",
        "is",
        "are",
        "do",
        "does",
        "please",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ]
)


# --- emojis, unicode, whitespace -------------------------------------------------------------
@lru_cache(maxsize=1)
def _emoji_module():  # imported lazily: only needed when a ticket has non-ASCII symbols
    import emoji

    return emoji


@lru_cache(maxsize=1)
def _emoji_hint() -> re.Pattern[str]:
    """Characters a text must hold for ``emoji.replace_emoji`` to change it.

    The library's tokenizer (emoji.tokenizer.tokenize, what replace_emoji runs) walks its search
    tree from each character: an emoji starts at a first character of the tree that is an emoji
    on its own, or is followed by one of its children (the ASCII "#", "*" and digits start only
    keycaps: their children are U+FE0F and U+20E3); every other character is yielded as it is,
    except U+FE0E and U+FE0F (dropped) and a ZWJ after an emoji. So a text with none of the
    characters below comes back unchanged. Every character above U+FFFF is in the class (one
    range instead of hundreds of emoji code points, which `re` would test one by one)."""
    from emoji.tokenizer import get_search_tree

    chars = {"\ufe0e", "\ufe0f"}
    for first, children in get_search_tree().items():
        if not first.isascii() or "data" in children:
            chars.add(first)
        else:  # "#", "*", "0".."9": only with what follows
            chars.update(child for child in children if child != "data")
    bmp = "".join(re.escape(c) for c in sorted(chars) if c <= "\uffff")
    return re.compile(f"[{bmp}\U00010000-\U0010ffff]")


def _emojis(text: str, mode: str) -> str:
    if mode == "keep" or text.isascii():
        return text
    hint = _emoji_hint().search(text)
    if hint is None:
        return text
    emoji = _emoji_module()

    def _name(_: str, data: dict) -> str:
        return " " + data["en"].strip(":").replace("_", " ") + " "

    replace = " " if mode == "remove" else _name
    # Only the space-separated pieces holding a hint go through the (slow, per character)
    # tokenizer: a space is in no emoji sequence (the tests check EMOJI_DATA), so no match runs
    # over it and the tokenizer yields it as it is; the one step that looks back (after a ZWJ, it
    # re-reads the two tokens before) re-reads a space as a space. So replace_emoji(a + " " + b)
    # is replace_emoji(a) + " " + replace_emoji(b), and a piece without a hint is unchanged.
    parts = []
    done = 0  # text[:done] is in parts
    while hint is not None:
        start = text.rfind(" ", done, hint.start()) + 1 or done
        end = text.find(" ", hint.start())
        end = len(text) if end < 0 else end
        parts.append(text[done:start])
        parts.append(emoji.replace_emoji(text[start:end], replace=replace))
        done = end
        hint = _emoji_hint().search(text, end)
    parts.append(text[done:])
    return "".join(parts)


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
    # re's \s and str.split()'s whitespace are the same characters (checked in the tests): one
    # space between words, none at the ends, as _WS.sub(" ", text).strip() made them
    text = " ".join(text.split())
    if config.remove_stopwords:
        text = " ".join(w for w in text.split(" ") if w.lower() not in _STOPWORDS)
    return text[: config.max_chars]


def preprocess_batch(texts: list[str], config: PreprocessConfig | None = None) -> list[str]:
    config = config or PreprocessConfig()
    return [preprocess(t, config) for t in texts]
