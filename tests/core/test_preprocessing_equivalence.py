"""``preprocess`` returns exactly what it returned before issue #23 made it cheaper.

Training, evaluation and serving share ``preprocess``: a changed output would be skew between
every existing artifact and the server. The reference is the implementation frozen verbatim in
``data/preprocessing_before_issue23.py`` (main at a07687a); it is compared with today's on

* generated text built to reach every rule (Hypothesis): lines of all five noise pools'
  e-mails, the lines each rule looks for (greetings, closings, device lines, reply and header
  blocks, contact lines, footers, quotes, P.S.), PII, emojis, every Unicode code point
  (U+017F, U+212A, U+0130, NUL, lone surrogates ...), every line break ``str.splitlines`` knows,
  long lines, with letters swapped for the non-ASCII ones ``re.IGNORECASE`` matches them with;
  under every preprocessing config;
* every ticket of the bundled Banking77 (clean, and wrapped by ``make_noisy`` in each pool);
* the real mail clients' and talon's e-mails of test_real_client_emails.py;

and the building blocks the speed-up rests on are checked over every code point against
``re`` itself (what IGNORECASE matches, ``\\s``) and against the emoji library.
"""

from __future__ import annotations

import random
import re
from functools import cache

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_real_client_emails import CASES, DATA, TALON_CASES

from benchmarks.preprocessing import frozen_module
from benchmarks.preprocessing import frozen_preprocess as before
from tests.core.corpus import banking77
from training.noise import POOLS, make_noisy
from triage_core import preprocessing
from triage_core.preprocessing import PreprocessConfig, extract_request, preprocess

ALL_CODE_POINTS = "".join(map(chr, range(0x110000)))


CONFIGS = st.builds(
    PreprocessConfig,
    unicode_form=st.sampled_from(["NFKC", "NFC", "none"]),
    emojis=st.sampled_from(["text", "remove", "keep"]),
    mask_pii=st.booleans(),
    extract_request=st.booleans(),
    remove_stopwords=st.booleans(),
    max_chars=st.sampled_from([16, 80, 2000]),
)
DEFAULT = PreprocessConfig()
RAW_RULES = PreprocessConfig(unicode_form="none", mask_pii=False, emojis="keep")  # no NFKC folding


@cache
def pool_lines() -> list[str]:
    """Every distinct line of 400 Banking77 tickets wrapped in each pool's e-mail and chat noise."""
    rng = random.Random(23)
    queries = rng.sample(banking77(), 80)
    return sorted(
        {line for pool in POOLS for q in queries for line in make_noisy(q, rng, pool=pool).splitlines()}
    )


# The lines the rules look for, with and without what disqualifies them, by where they sit in an
# e-mail; each rule's trigger also appears alone (a footer word, "wrote:" without a date ...).
SECTIONS: dict[str, tuple[str, ...]] = {
    "greeting": (
        *("Hi,", "Hello team,", "hey there", "Dear Sir or Madam,", "good evening I bought a card", "Hello"),
        *("hey there must have been a mistake", "Hi Jane Doe,", "Good morning!", "To whom it may concern:"),
    ),
    "body": (
        *("Where is my card?", "I lost my card", "why was I charged twice", "", "   ", "😊 🙏"),
        *("my card 4111 1111 1111 1111 was charged", "IBAN GB82 WEST 1234 5698 7654 32", "USD 12"),
        *("call (555) 123-4567", "07700 900 123", "account 12345678", "12.03.2024 10:14", "€1,500.00"),
        *("From: the app it shows two payments", "Amount: 50 EUR", "Sent from my account 3 days ago"),
        *("1️⃣ keycap", "#️⃣", "🇬🇧 flag", "👨‍👩‍👧 family", "👍🏽", "☺︎", "❤️", "\u200d", "e-mail me"),
        *("please take me off your mailing list", "Thanks! Where is it?", "Regards, I am waiting"),
    ),
    "closing": (
        *("Best regards,", "Thanks,", "Thank you!", "Cheers", "thx", "Yours truly,", "Kind regards"),
        *("Many thanks,", "Best", "ty", "Thank you so much in advance,", "Thanks again for all of the help"),
        *("Warm wishes from all the team,", "Thanks, we will wait for you"),
    ),
    "name": ("Jane Doe", "Customer Care Team", "Anna Müller", "J. O'Brien-Smith", "Lukas"),
    "contact": (
        *("Mobile: +44 7700 900123", "Tel. 0123 456 789", "E: jane@example.com", "web: www.bank.example"),
        *("Jane Doe | +44 7700 900123", "jane@example.com", "https://bank.example/help", "(020) 7946 0958"),
    ),
    "device": (
        *("Sent from my iPhone", "Sent with Proton Mail secure email", "sent via Outlook for Android"),
        *("Get Outlook for iOS", "Download Foo for Android", "Sent from my phone", "SENT FROM MY IPAD"),
        *("jane@example.com sent from my iPhone", "+44 7700 900123 Sent from my Galaxy", "Sent from my"),
    ),
    "footer": (
        *("This e-mail is confidential and intended solely for the addressee.", "DISCLAIMER"),
        *("Please consider the environment before printing.", "To unsubscribe, write to x@y.example"),
        *("bank-users mailing list", "legally binding", "virus scan", "viruses check", "privileged"),
        *("if you are not the intended recipient", "intended only for you", "intended for", "-- ", "--"),
    ),
    "ps": ("P.S. my card ends in 1234?", "PS: thanks", "p.p.s.", "P.S. I am abroad"),
    "header": (
        *("On Tue, 3 Mar 2025 at 10:14, Support <help@bank.example> wrote:", "On Monday, Jane wrote:"),
        *("On Tue, 3 Mar 2025 Support <help@bank.example> wrote:", "On Monday 3 March 2025, Jane wrote:"),
        *("-----Original Message-----", "---- On Mon, 2 Jan 2024 jane@x.com wrote ----"),
        *("Begin forwarded message:", "---------- Forwarded message ---------"),
        *("Am 12.03.2024 um 10:14 schrieb Jan <j@x.de>:", "Le 3 mars 2025, Jean <jean@x.fr> a écrit :"),
        *("2014-10-17 11:28 GMT+03:00 Jan <j@x.com>:", "On Mon, 2 Jan 2024, Jan <j@x.com> sent:"),
        *("From: Support <help@bank.example>", "Sent: Tuesday, 3 March 2025 10:14", "To: Jane Doe"),
        *("Subject: my card", "Date: Mon, 2 Jan 2024", "From: John Smith", "*From:* Jane", "Von: Jan"),
        *("Objet : carte", "Sent: 2025", "Cc: [EMAIL]", "<help@bank.example>"),
    ),
    "quoted": ("> quoted line", ">", "> On Mon wrote:", "  > Thank you for contacting us.", ">> old"),
}
RULE_LINES = sorted({line for lines in SECTIONS.values() for line in lines})
# Characters that re.IGNORECASE matches to ASCII letters, control and odd characters.
ODD = [
    "ſ",
    "\u212a",  # KELVIN SIGN
    "İ",
    "ı",
    "\x00",
    "\ud800",
    "\udfff",
    "\x7f",
    "\u200b",
    "\ufeff",
    "\u00a0",
    "\u3000",
    "ﬁ",
    "１",
]
BREAKS = ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\n\n"]
SWAPS = {"s": "ſ", "S": "ſ", "k": "\u212a", "K": "\u212a", "i": "ı", "I": "İ"}


def _swap(line: str, rng: random.Random) -> str:
    """Letters of ``line`` swapped for what IGNORECASE matches them with, at random."""
    return "".join(SWAPS[c] if c in SWAPS and rng.random() < 0.5 else c for c in line)


def _case(line: str, how: int) -> str:
    return (line, line.upper(), line.lower(), line.title())[how]


@st.composite
def lines(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        line = draw(st.sampled_from(pool_lines()))
    elif kind in (1, 2):
        line = draw(st.sampled_from(RULE_LINES))
    elif kind == 3:
        line = draw(st.text(max_size=30))
    elif kind == 4:  # pieces glued together: slices of rule lines, odd characters, random text
        rule = st.sampled_from(RULE_LINES)
        sliced = st.tuples(rule, st.integers(0, 40), st.integers(0, 40)).map(lambda t: t[0][t[1] : t[2]])
        pieces = st.one_of(rule, sliced, st.sampled_from(ODD), st.text(max_size=6))
        line = "".join(draw(st.lists(pieces, max_size=5)))
    else:  # long lines (the 160/240-character windows of the header rules, the 120 of contacts)
        line = draw(st.sampled_from(RULE_LINES)) * draw(st.integers(2, 40))
    line = _case(line, draw(st.integers(0, 3)))
    if draw(st.booleans()):
        line = _swap(line, random.Random(draw(st.integers(0, 2**16))))
    indent = draw(st.sampled_from(["", "", " ", "  ", "\t", "\u00a0"]))
    return indent + line + draw(st.sampled_from(["", "", " ", "\t"]))


def _wrapped(line: str, cuts: list[int]) -> list[str]:
    """``line`` wrapped at the spaces ``cuts`` pick (a header wrapped over two or three lines)."""
    spaces = [i for i, c in enumerate(line) if c == " "]
    at = sorted({spaces[c % len(spaces)] for c in cuts}) if spaces else []
    return [line[a:b].strip(" ") for a, b in zip([0, *at], [*at, len(line)], strict=True)]


@st.composite
def emails(draw: st.DrawFn) -> list[str]:
    """An e-mail's sections in their usual order, each maybe missing, lines maybe wrapped."""
    out: list[str] = []
    for section in ("greeting", "body", "body", "closing", "name", "contact", "ps", "device", "footer"):
        out += draw(st.lists(st.sampled_from(SECTIONS[section]), max_size=2))
        if draw(st.integers(0, 3)) == 0:
            out.append("")
    for _ in range(draw(st.integers(0, 2))):  # the history: a header (wrapped or not), quoted lines
        header = draw(st.sampled_from(SECTIONS["header"]))
        out += _wrapped(header, draw(st.lists(st.integers(0, 50), max_size=2)))
        out += draw(st.lists(st.sampled_from(SECTIONS["quoted"] + SECTIONS["body"]), max_size=3))
    if draw(st.booleans()):  # a bottom post: the reply under the quote
        out += draw(st.lists(st.sampled_from(SECTIONS["body"]), max_size=2))
    return out


@st.composite
def texts(draw: st.DrawFn) -> str:
    body = draw(st.one_of(st.lists(lines(), max_size=12), emails()))
    if draw(st.booleans()):  # odd lines, case and look-alike letters in a structured e-mail
        for _ in range(draw(st.integers(1, 3))):
            body.insert(draw(st.integers(0, len(body))), draw(lines()))
    if draw(st.booleans()):
        body = [_swap(line, random.Random(i)) for i, line in enumerate(body)]
    out = ""
    for line in body:
        out += line + draw(st.sampled_from(BREAKS))
    return out if draw(st.booleans()) else out.rstrip("\n")


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts(), CONFIGS)
@example("Sent from my iPhone\n\nhello", DEFAULT)
@example("ſent from my iPhone", RAW_RULES)
def test_preprocess_equals_the_frozen_one_on_generated_text(text: str, config: PreprocessConfig) -> None:
    assert preprocess(text, config) == before(text, config)


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=400), CONFIGS)
def test_preprocess_equals_the_frozen_one_on_any_text(text: str, config: PreprocessConfig) -> None:
    assert preprocess(text, config) == before(text, config)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(texts(), st.text()))
def test_extract_request_equals_the_frozen_one(text: str) -> None:
    assert extract_request(text) == frozen_module().extract_request(text)


@pytest.mark.parametrize(
    ("pool", "config"),
    [(pool, DEFAULT) for pool in (None, *POOLS)] + [(None, RAW_RULES), ("eval", RAW_RULES)],
    ids=[f"{pool}-default" for pool in ("clean", *POOLS)] + ["clean-raw", "eval-raw"],
)
def test_preprocess_equals_the_frozen_one_on_banking77(pool: str | None, config: PreprocessConfig) -> None:
    """Every bundled Banking77 ticket (10,003), as it is and wrapped in each pool's noise; the
    served config, and one that neither normalizes Unicode nor masks PII (the rules see the raw
    text)."""
    queries = banking77()
    if pool is not None:
        rng = random.Random(f"{pool}:23")
        queries = [make_noisy(q, rng, pool=pool) for q in queries]
    differ = [q for q in queries if preprocess(q, config) != before(q, config)]
    assert differ == []


def _fixture_emails() -> list[str]:
    real = [(DATA / case.fixture).read_bytes().decode("utf-8") for case in CASES]
    return real + [case.email for case in TALON_CASES]


@pytest.mark.parametrize("config", [DEFAULT, RAW_RULES], ids=["default", "no-unicode-no-mask"])
def test_preprocess_equals_the_frozen_one_on_real_client_emails(config: PreprocessConfig) -> None:
    emails = _fixture_emails()
    assert len(emails) > 60
    for text in emails:
        assert preprocess(text, config) == before(text, config)
        for line_break in ("\r\n", "\r", "\u2028"):  # each client's e-mail with other line breaks
            other = text.replace("\r\n", "\n").replace("\n", line_break)
            assert preprocess(other, config) == before(other, config)


# --- the building blocks, against `re` and the emoji library themselves ------------------------
def test_fold_maps_what_ignorecase_matches_to_the_ascii_letter_one_for_one() -> None:
    folded = preprocessing._fold(ALL_CODE_POINTS)
    assert len(folded) == len(ALL_CODE_POINTS)  # one character per character: indexes carry over
    for letter in "abcdefghijklmnopqrstuvwxyz":
        matched = re.findall(letter, ALL_CODE_POINTS, re.IGNORECASE)
        assert {preprocessing._fold(c) for c in matched} == {letter}, letter
    for letter in "abcdefghjlmnopqrtuvwxyz":  # all but i, k, s: only its two cases ("p" of a P.S.)
        assert set(re.findall(letter, ALL_CODE_POINTS, re.IGNORECASE)) == {letter, letter.upper()}
    for special in ("ſ", "ı", "İ", "\u212a"):  # the other branch (a text without them is lowered only)
        assert preprocessing._fold("xS" + special) == preprocessing._fold("xs") + preprocessing._fold(special)


def test_whitespace_of_re_and_str_split_are_the_same_characters() -> None:
    spaces = "".join(re.findall(r"\s", ALL_CODE_POINTS))
    assert spaces == "".join(c for c in ALL_CODE_POINTS if c.isspace())
    assert ("x" + "x".join(spaces) + "x").split() == ["x"] * (len(spaces) + 1)  # each one splits


def test_characters_before_digits_are_what_ignorecase_matches() -> None:
    """_pii_matches's _BEFORE_DIGITS: every character each start of _PII's alternatives matches."""
    sets = dict(preprocessing._BEFORE_DIGITS)

    def matched(pattern: str) -> set[str]:
        return set(re.findall(pattern, ALL_CODE_POINTS, re.IGNORECASE))

    assert set(sets[1]) == matched(r"[$€£¥]") | matched(r"\+") | matched(r"\(")
    assert set(sets[2]) == matched(r"[A-Z]")
    assert set(sets[3]) == set(sets[4]) == matched(r"[UEGC]")
    assert "(?:USD|EUR|GBP|CHF)" in preprocessing._PII.pattern  # the starts read above


def test_alnum_class_is_str_isalnum() -> None:
    assert re.findall(r"[^\W_]", ALL_CODE_POINTS) == [c for c in ALL_CODE_POINTS if c.isalnum()]
    assert preprocessing._ALNUM.pattern == r"[^\W_]"


_PII_PIECES = st.sampled_from(
    [
        *("@", "www.", "WWW.", "wWw.", "http://", "HTTPſ://", "4", "12", "٣", "૭", "+44 ", "(020) ", "€"),
        *("$", "USD ", "eur", "GB82 ", "a.b+c-d", ".", "-", "/", ":", "_", " ", "\n", "ſ", "\u212a", "İ"),
    ]
)


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(st.one_of(st.text(max_size=12), _PII_PIECES, st.sampled_from(RULE_LINES)), max_size=14).map(
        "".join
    )
)
@example("x" * 70 + "@b.example")  # a local part longer than 64: the e-mail starts inside it
@example("ab" * 40 + "1@bank.example +44 7700 900123")
def test_pii_matches_are_the_scanners(text: str) -> None:
    scanner = preprocessing._PII
    assert [(m.span(), m.lastgroup) for m in preprocessing._pii_matches(text)] == [
        (m.span(), m.lastgroup) for m in scanner.finditer(text)
    ]
    assert preprocessing._pii_sub(" ", text) == scanner.sub(" ", text)


EMOJI_PIECES = st.sampled_from(
    [
        "😊",
        "🙏",
        "1",
        "#",
        "*",
        "\ufe0f",
        "\ufe0e",
        "\u20e3",
        "\u200d",
        "🇬",
        "🇧",
        "👍",
        "🏽",
        "©",
        "®",
        "™",
        "a",
        " ",
        " ",
        "\n",
        "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    ]
)


@settings(max_examples=2000, deadline=None)
@given(
    st.lists(st.one_of(EMOJI_PIECES, st.characters(), st.text(max_size=3)), max_size=12).map("".join),
    st.sampled_from(["text", "remove"]),
)
def test_emojis_replaced_piece_by_piece_as_the_emoji_library_does_at_once(text: str, mode: str) -> None:
    assert preprocessing._emojis(text, mode) == frozen_module()._emojis(text, mode)


def test_no_emoji_sequence_holds_a_space() -> None:
    """What _emojis's cutting at spaces rests on (checked on the installed emoji library)."""
    import emoji

    assert not any(" " in sequence for sequence in emoji.EMOJI_DATA)
    assert " " not in emoji.tokenizer.get_search_tree()
