"""Preprocessing on e-mails written by real mail clients and help desks.

The fixtures in ``data/real_client_emails/`` are copied byte for byte from the test fixtures of
crisp-oss/email-reply-parser (MIT; source, commit, licence and clients in the README there). For
each one, that project's ``test/test.js`` states which text is the visible reply and which part
is quoted (or otherwise hidden); the upstream test is cited in every case and in its param id.

Our preprocessing differs from that parser in purpose: it also drops greetings, sign-offs,
signatures and device lines, and replaces e-mail addresses, URLs, phone, card and account
numbers by placeholders. So the checks are about content, never about our exact output:

* kept: every key sentence of upstream's visible reply, cleaned the way ``preprocess`` cleans any
  text (NFKC, placeholders, whitespace) but without the e-mail extraction, is in our output
  (compared case-insensitively); and ``preprocess`` of the visible reply on its own is in
  ``preprocess`` of the whole e-mail, i.e. whatever our rules keep of the reply, they keep it
  inside the thread too;
* dropped: every distinctive sentence of the part upstream puts in a quoted/hidden fragment,
  cleaned the same way, is not in our output.

Where upstream's test only asserts an anchor (a regex on a fragment), ``visible`` is the
fixture's text of the fragment that anchor pins. A failure here is a finding, not a reason to
change an expectation.
"""

from __future__ import annotations

import ast
import email
import email.iterators
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from triage_core.preprocessing import PreprocessConfig, preprocess

DATA = Path(__file__).parent / "data" / "real_client_emails"
SOURCE_COMMIT = "0b3704c8744d6f57ae1d86d7eab75535c51d2f5c"  # crisp-oss/email-reply-parser

# test.js: COMMON_FIRST_FRAGMENT, the visible reply of most client fixtures.
COMMON_FIRST_FRAGMENT = (
    "Fusce bibendum, quam hendrerit sagittis tempor, dui turpis tempus erat, pharetra sodales ante "
    "sem sit amet metus.\n"
    "Nulla malesuada, orci non vulputate lobortis, massa felis pharetra ex, convallis consectetur "
    "ex libero eget ante.\n"
    "Nam vel turpis posuere, rhoncus ligula in, venenatis orci. Duis interdum venenatis ex a "
    "rutrum.\n"
    "Duis ut libero eu lectus consequat consequat ut vel lorem. Vestibulum convallis lectus urna,\n"
    "et mollis ligula rutrum quis. Fusce sed odio id arcu varius aliquet nec nec nibh."
)
COMMON_KEY = (
    "Fusce bibendum, quam hendrerit sagittis tempor, dui turpis tempus erat, pharetra sodales ante "
    "sem sit amet metus.",
    "Nam vel turpis posuere, rhoncus ligula in, venenatis orci.",
    "Fusce sed odio id arcu varius aliquet nec nec nibh.",
)
# The quoted message of several fixtures.
ETIAM = "Etiam non sagittis orci, non rutrum urna."


@dataclass(frozen=True)
class Case:
    fixture: str
    upstream_test: str  # the test in crisp-oss/email-reply-parser test/test.js
    blob: str  # git blob id of the fixture at SOURCE_COMMIT: the bytes are the stored ones
    visible: str  # the visible reply according to upstream_test
    key: tuple[str, ...]  # sentences of the visible reply that must survive
    hidden: tuple[str, ...] = ()  # distinctive text of the quoted/hidden part that must not


CASES = [
    # test_sent_from / test_parseReply_with_signature: getVisibleText() is exactly the reply;
    # the TypeApp device line and the wrapped "On ... Valerian - Crisp <...> wrote:" thread are hidden.
    Case(
        "email_sent_from.txt",
        "test_sent_from",
        "0ae8a6e1f409c2b1f0c7067de2045d2eff2544f9",
        visible=(
            "Hi it can happen to any texts you type, as long as you type in between words or paragraphs.\n"
        ),
        key=("it can happen to any texts you type, as long as you type in between words or paragraphs.",),
        hidden=(
            "Can you send this text here so that we can replicate and fix?",
            "Valerian - Crisp",
            "Sent from TypeApp",
        ),
    ),
    # text_email_regards: fragments[0] is exactly "Hi,\n\nI still have the same problem....\n\nCan
    # you help?\n"; the "Regards, / John Doe / CEO @ Acme !" signature is a later fragment.
    Case(
        "email_with_regards.txt",
        "text_email_regards",
        "9edc300f9055acf20d7f9983ed8f15a76f9a3631",
        visible="Hi,\n\nI still have the same problem....\n\nCan you help?\n",
        key=("I still have the same problem....", "Can you help?"),
        hidden=("CEO @ Acme",),
    ),
    # text_email_zoho: fragments[0] is exactly the question; Zoho Mail's
    # "---- On <date> <address> wrote ----" starts the quoted fragment.
    Case(
        "email_zoho.txt",
        "text_email_zoho",
        "900263aef5e490c3df88419a45a983eb77e1f122",
        visible="What is the best way to clear a Riak bucket of all key, values after\nrunning a test?\n",
        key=("What is the best way to clear a Riak bucket of all key, values after running a test?",),
        hidden=("Java sucks", "24 Feb 2021 14:02:50"),
    ),
    # text_email_msn: fragments[0] == COMMON_FIRST_FRAGMENT, 2 fragments: the Outlook.com
    # "____ / From: / Sent: / To: / Subject:" block and the message under it are the quote.
    Case(
        "email_msn.txt",
        "text_email_msn",
        "0f7af0197a6adb6064f4ac1313f70d07f79748c9",
        visible=COMMON_FIRST_FRAGMENT,
        key=COMMON_KEY,
        hidden=(
            "Thanks for your interest in the Local CDL A Driver role at Republic Transport!",
            "Are you currently employed?",
            "Your application for Local CDL A Driver",
        ),
    ),
    # text_email_ios_outlook: fragments[0] == COMMON_FIRST_FRAGMENT, 3 fragments: the
    # "Get Outlook for iOS" line, then the Outlook header block and the quoted message.
    Case(
        "email_ios_outlook.txt",
        "text_email_ios_outlook",
        "cd39b70556f0494d23973dbe4afddbf537d54d12",
        visible=COMMON_FIRST_FRAGMENT,
        key=COMMON_KEY,
        hidden=(
            "We'd be excited to have you come interview for the Chauffeur role.",
            "Can you come in for an interview in the next week?",
            "Get Outlook for iOS",
        ),
    ),
    # test_email_gmail: fragments[0] == COMMON_FIRST_FRAGMENT, 2 fragments: Gmail's header wrapped
    # inside the address ("... The Hiring Engine <\naddress> wrote:") starts the quote.
    Case(
        "email_gmail_split_line_from.txt",
        "test_email_gmail",
        "310db32cda29204fbd664194e20f66d84c33e4f3",
        visible=COMMON_FIRST_FRAGMENT,
        key=COMMON_KEY,
        hidden=("On Mon, Aug 26, 2019 at 4:37 PM The Hiring Engine",),
    ),
    # test_email_outlook: fragments[0] == COMMON_FIRST_FRAGMENT, 2 fragments: Outlook's
    # "From: Human Resources\n<address>\nSent: ..." block and the message under it are the quote.
    Case(
        "email_outlook_split_line_from.txt",
        "test_email_outlook",
        "29c1dbacee070ef2a537836d9cf294615200ad48",
        visible=COMMON_FIRST_FRAGMENT,
        key=COMMON_KEY,
        hidden=("Your company is really cool!", "Subject: A new message from applicant"),
    ),
    # test_email_original_message: fragments[0] == COMMON_FIRST_FRAGMENT, 2 fragments: the
    # "-----original message-----" separator and the message under it.
    Case(
        "email_original_message.txt",
        "test_email_original_message",
        "c5d774547ee37d5a570d2ac920534b73e76d4856",
        visible=COMMON_FIRST_FRAGMENT,
        key=COMMON_KEY,
        hidden=(
            "I'd like to revisit the proposal I previously shared with you regarding a potential "
            "collaboration.",
        ),
    ),
    # test_email_outlook_en: fragments[0] == COMMON_FIRST_FRAGMENT; the Outlook
    # "From: / Date: / To: / Subject:" block and the message under it follow (CR/LF file).
    Case(
        "email_18.txt",
        "test_email_outlook_en",
        "ba00c574bf7399a8425f62b7758b04f7d37819a6",
        visible=COMMON_FIRST_FRAGMENT,
        key=COMMON_KEY,
        hidden=(ETIAM, "Date: Thursday, July 7, 2016"),
    ),
    # test_email_en_multiline_2: fragments[0] == COMMON_FIRST_FRAGMENT, 2 fragments: the header
    # wrapped before "wrote:" starts the history, which is not '>'-quoted.
    Case(
        "email_en_multiline_2.txt",
        "test_email_en_multiline_2",
        "5bc8b2a35e0ab70cf00c843e1b9246b105b8a0ae",
        visible=COMMON_FIRST_FRAGMENT,
        key=COMMON_KEY,
        hidden=(ETIAM, "John - Acme"),
    ),
    # test_email_sent_from_my: fragments[0] == COMMON_FIRST_FRAGMENT: "Sent from my Wiko RIDGE
    # FAB 4G" and the unquoted, header-less message under it are not the reply (CR/LF file).
    Case(
        "email_15.txt",
        "test_email_sent_from_my",
        "403bc372b402f099d9c799a6a6ca75d21d71f1d8",
        visible=COMMON_FIRST_FRAGMENT,
        key=COMMON_KEY,
        hidden=(ETIAM, "Sent from my Wiko RIDGE FAB 4G"),
    ),
    # test_reads_top_post: fragments[0] is exactly "Oh thanks.\n\nHaving the function would be
    # great.\n\n-Abhishek Kona\n"; the "On 01/03/11 7:07 PM, Russell Brown wrote:" thread follows.
    Case(
        "email_3.txt",
        "test_reads_top_post",
        "689b379155d82fb55195c19e0ce0e21a1ae036ff",
        visible="Oh thanks.\n\nHaving the function would be great.\n\n-Abhishek Kona\n",
        key=("Having the function would be great.",),
        hidden=(
            "Russell Brown wrote:",
            "You can list the keys for the bucket and call delete for each.",
            "riak-users mailing list",
        ),
    ),
    # test_deals_with_multiline_reply_headers: fragments[0] /^I get/, fragments[1] /^On/ and
    # /Was this/: the Apple Mail header wrapped over three lines belongs to the quote.
    Case(
        "email_6.txt",
        "test_deals_with_multiline_reply_headers",
        "5342fc6e24838f351069f913b0cf376e594cd829",
        visible="I get proper rendering as well.\n\nSent a magnificent torch of pixels\n",
        key=("I get proper rendering as well.",),
        hidden=("Was this caching related or fixed already?", "at 12:47 PM, Corey Donohoe"),
    ),
    # text_email_reply_header: fragments[0] has /^On the other hand/m (lines starting with "On"
    # are reply text), fragments[1] starts /^On Wed, Dec 9/: the header wrapped over 3 lines.
    Case(
        "email_reply_header.txt",
        "text_email_reply_header",
        "bbe277e185ff98d369cd695a5ec8ff004de2915c",
        visible=(
            "This is the latest reply.\n\n"
            "The thread contains two previous replies, and the most recent reply header has a line "
            "break in it.\n\n"
            "If we don't patch the line break, the reply header ends up in THIS fragment, instead of "
            "in the quoted fragment.\n\n"
            "On the one hand, there could be a line in the reply starting with the word 'On.'\n\n"
            "On the other hand, it could happen TWICE!\n\n"
            "Stranger\n"
        ),
        key=(
            "This is the latest reply.",
            "On the one hand, there could be a line in the reply starting with the word 'On.'",
            "On the other hand, it could happen TWICE!",
        ),
        hidden=("On Wed, Dec 9, Mister Example", "It's mrmister again, and I hope you reply to me."),
    ),
    # test_email_not_a_signature_2: one fragment, not a signature: the "-- ..." bullet lines are
    # the customer's text, not an RFC 3676 signature delimiter. Nothing is quoted.
    Case(
        "email_not_a_signature_2.txt",
        "test_email_not_a_signature_2",
        "ee30e5bd41977e38ac6a34766ecb7b8a0692239f",
        visible=(
            "Hello,\n\nI'm writing you because of:\n-- first point needs to be checked\n"
            "-- second point needs to be checked\n-- and also third point needs to be checked\n\n"
            "I hope you can check it\n\nThanks!"
        ),
        key=(
            "I'm writing you because of:",
            "-- first point needs to be checked",
            "-- second point needs to be checked",
            "-- and also third point needs to be checked",
            "I hope you can check it",
        ),
    ),
    # test_reads_bottom_post: fragments "Hi," / /^On [^:]+:/ / /^You can list/ / /^>/ / ... : the
    # reply is written below the '>'-quoted question (bottom post), and quoted lines follow it.
    Case(
        "email_2.txt",
        "test_reads_bottom_post",
        "0f4913c4737ed5b8c79171423ed13aa335072232",
        visible=(
            "You can list the keys for the bucket and call delete for each. Or if you\n"
            "put the keys (and kept track of them in your test) you can delete them\n"
            "one at a time (without incurring the cost of calling list first.)\n"
        ),
        key=(
            "You can list the keys for the bucket and call delete for each.",
            "you can delete them one at a time (without incurring the cost of calling list first.)",
        ),
        hidden=(
            "Abhishek Kona wrote:",
            "I am currently using the Java HTTP API.",
            "riak-users mailing list",
        ),
    ),
]


def _clean(text: str) -> str:
    """``text`` as preprocessing cleans any text (NFKC, placeholders, whitespace), without the
    e-mail extraction; case-folded for comparison."""
    config = PreprocessConfig(extract_request=False, max_chars=100_000)
    return preprocess(text, config).casefold()


def _read(case: Case) -> str:
    return (DATA / case.fixture).read_bytes().decode("utf-8")  # bytes as stored: CR/LF kept


def _output(case: Case) -> str:
    return preprocess(_read(case)).casefold()


IDS = [f"{case.fixture[:-4]}-{case.upstream_test}" for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reply_is_kept(case: Case) -> None:
    output = _output(case)
    lost = [sentence for sentence in case.key if _clean(sentence) not in output]
    assert not lost, f"reply sentences lost: {lost}\noutput: {output!r}"
    assert preprocess(case.visible).casefold() in output, f"output: {output!r}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_quoted_part_is_dropped(case: Case) -> None:
    output = _output(case)
    kept = [text for text in case.hidden if _clean(text) in output]
    assert not kept, f"quoted/hidden text kept: {kept}\noutput: {output!r}"


@pytest.mark.parametrize("case", CASES, ids=[case.fixture[:-4] for case in CASES])
def test_expectations_are_taken_from_the_fixture(case: Case) -> None:
    """Guards the two tests above: every sentence checked occurs in the e-mail (an absent one
    would make a "dropped" check pass for nothing), the visible reply is the e-mail's text, and
    the fixture's bytes are the ones stored upstream (git blob id)."""
    data = (DATA / case.fixture).read_bytes()
    assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == case.blob
    raw = _clean(_read(case))
    assert _clean(case.visible) in raw
    for text in (*case.key, *case.hidden):
        assert _clean(text) in raw, text
    for text in case.key:
        assert _clean(text) in _clean(case.visible), text
    for text in case.hidden:
        assert _clean(text) not in _clean(case.visible), text


def test_every_fixture_has_a_case() -> None:
    assert sorted(p.name for p in DATA.glob("*.txt")) == sorted(case.fixture for case in CASES)


# --- mailgun/talon's fixtures (Apache-2.0, PyPI sdist talon 1.4.4) ----------------------------
# data/talon/ holds, byte for byte, talon's tests/fixtures/standard_replies/ (12 e-mails written
# by Android in Russian, AOL, Apple Mail (two), Comcast, Gmail, Hotmail, iPhone, Outlook, Sparrow,
# Thunderbird and Yahoo) and its tests/text_quotations_test.py (renamed *.txt so that neither pytest nor ruff
# reads it as code): 49 replies in English, German, French, Danish, Swedish, Norwegian, Dutch,
# Polish and Vietnamese, each with talon's expectation of the reply, read here from its
# ``eq_(reply, quotations.extract_from_plain(msg_body))`` calls. README.md there: source, hashes,
# licence.
TALON = Path(__file__).parent / "data" / "talon"
TALON_SHA256 = {
    "LICENSE": "cb5e8e7e5f4a3988e1063c142c60dc2df75605f4c46515e776e3aca6df976e14",
    "text_quotations_test.py.txt": "d85645bd51dc8c0cfb01851ad0a62c37b4b17b44d460eb35c0cff642d1fbe731",
    "standard_replies/android.eml": "397974938a2d8ef0ed651bea32f8dc1ca1a8530355b7cd7f82bbe638f7b0cc4e",
    "standard_replies/aol.eml": "c10047891f9f9b7b600dddd2ef719c9b0075137e722264839553a9225065c83f",
    "standard_replies/apple_mail.eml": "60b28bc3752e74b80332caaa249c784b4956a4d9873f23cc172d70ba74c6cd36",
    "standard_replies/apple_mail_2.eml": "9ef30ad9b167beb38ac5a71a040b03267a4eb27d3eb51a999613d887b889cdc3",
    "standard_replies/comcast.eml": "1300bd5c157daa27cc1d31642919b7a46408ba285efb3ca3a999345af8a99e99",
    "standard_replies/gmail.eml": "2aeea0d48a5babf3d768091db1e449ae49e78d5c0d4fe5a539969d7fafa12677",
    "standard_replies/hotmail.eml": "409c1c377183006d61215cb83fd6b2e2aad8ee2ffbbc8ad02bef29dfdfc02982",
    "standard_replies/iphone.eml": "90879c8d11501f22e1f6dff65ac2a48623e6b4cd3e776e277a03c059fcd15382",
    "standard_replies/iphone_reply_text": "943d0bfff6e0a04d37bdfeec96aa6158efe1a53364fe0b3b44e3a54246cccc21",
    "standard_replies/outlook.eml": "9b7f84f16dc2b1fe3580b3adc14030c5afc570c2066c20ce15884bf1c2b5a194",
    "standard_replies/sparrow.eml": "e4847f31c4c15e4638e9f368fe3ed8338f380169dde452b7ecad787118fd404e",
    "standard_replies/sparrow_reply_text": "914609f6d865eb428ea96fcb2a57958c22d4dde906ec6802b1d2359414e3e9ee",
    "standard_replies/thunderbird.eml": "9b17b516d8f8ffaa8183d2f8c323670329ca26c9f5faaa2d2750732fb781655b",
    "standard_replies/yahoo.eml": "b814a89bc5610854af2475c77dba1afed8c49661e14349178fe26d0dae55e0da",
}
# Where our rules differ from talon's expectation on purpose, or do not (yet) recognise a
# history: only the request is checked (the text given, quoted from talon's reply), not that the
# rest is dropped. Each is a finding, with its reason.
TALON_DIFFERENCES = {
    # a header wrapped over a blank line and a "<\nmailto:..." line: not certainly a header, kept
    "test_pattern_on_date_polymail": "Test reply",
    # the reply and the header share a line ("reply--- On ... wrote:"): the rules cut at line starts
    "test_reply_and_quotation_splitter_share_line": "reply",
    "test_reply_and_quotation_splitter_share_line-1": "reply",
    "test_reply_and_quotation_splitter_share_line-2": "reply",
    # "2011/4/7 Name <address>" with no "wrote" and no colon: not certainly a header (its '>'
    # lines are dropped)
    "test_pattern_date_email_with_unicode": "Replying ok",
    # a lone "From: <address>" with no dated Sent:/Date: field: kept (issue #20: field lines are
    # content unless they are certainly a header block)
    "test_link_closed_with_quotation_marker_on_new_line": "8.45am-1pm",
    # talon keeps a ">>> >>> <link> <<<" line as text; every line starting with '>' is a quote here
    "test_quotation_marker_false_positive": "Visit us now for assistance...",
    # talon keeps a forwarded message; the rules cut from "---------- Forwarded message"
    "test_dont_parse_quotations_for_forwarded_messages": "FYI",
}


@dataclass(frozen=True)
class TalonCase:
    name: str  # the talon test (and "-<n>" for its n-th check)
    email: str
    reply: str  # talon's expected reply


def _talon_inline_cases() -> list[TalonCase]:
    """talon's ``eq_(reply, quotations.extract_from_plain(msg_body))`` checks whose arguments are
    string literals or names bound to one in the test, and its ``_check_pattern_original_message``
    calls (a template filled with the separator's words, reply "Test reply")."""
    tree = ast.parse((TALON / "text_quotations_test.py.txt").read_text(encoding="utf-8"))
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    template = next(
        node.value.value
        for f in functions
        if f.name == "_check_pattern_original_message"
        for node in f.body
        if isinstance(node, ast.Assign)
    )
    cases = []
    for function in (f for f in functions if f.name.startswith("test_")):
        bound = {
            node.targets[0].id: node.value.value
            for node in ast.walk(function)
            if isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        }

        def literal(node: ast.expr, bound: dict[str, str] = bound) -> str | None:
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                return node.value
            return bound.get(node.id) if isinstance(node, ast.Name) else None

        found = []
        for node in ast.walk(function):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            if node.func.id == "_check_pattern_original_message":
                words = node.args[0].value
                found.append((f"{function.name}-{words}", template.format(words), "Test reply"))
            elif node.func.id == "eq_" and isinstance(call := node.args[1], ast.Call):
                if getattr(call.func, "attr", None) != "extract_from_plain":
                    continue
                reply, email = literal(node.args[0]), literal(call.args[0])
                if reply is not None and email is not None:
                    found.append((function.name, email, reply))
        for n, (name, email, reply) in enumerate(found):
            suffix = f"-{n}" if n and name == function.name else ""
            cases.append(TalonCase(name + suffix, email, reply))
    return cases


def _talon_standard_cases() -> list[TalonCase]:
    """talon's test_standard_replies: the first text/plain part of each .eml, decoded; the reply
    is ``<name>_reply_text`` where there is one, else "Hello"."""
    cases = []
    for path in sorted((TALON / "standard_replies").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes())
        body = next(email.iterators.typed_subpart_iterator(message, subtype="plain"))
        text = "".join(
            part.get_payload(decode=True).decode("utf8") for part in body.walk() if not part.is_multipart()
        )
        reply_file = path.with_name(path.stem + "_reply_text")
        reply = reply_file.read_text().strip() if reply_file.exists() else "Hello"
        cases.append(TalonCase(f"standard_replies/{path.name}", text, reply))
    return cases


TALON_CASES = _talon_inline_cases() + _talon_standard_cases()


def _distinct_lines(case: TalonCase) -> list[str]:
    """Lines of the e-mail outside talon's reply, with two words or more, that are not text of
    the reply as well ("> Test" under "Test reply")."""
    reply_lines = {line.strip() for line in case.reply.splitlines()}
    reply = _clean(case.reply)
    lines = [line.strip().lstrip(">* ").strip() for line in case.email.splitlines()]
    return [
        line
        for line in lines
        if line not in reply_lines and len(line.split()) >= 2 and _clean(line) and _clean(line) not in reply
    ]


@pytest.mark.parametrize("case", TALON_CASES, ids=[case.name for case in TALON_CASES])
def test_talon_reply_is_kept(case: TalonCase) -> None:
    output = preprocess(case.email).casefold()
    if case.name in TALON_DIFFERENCES:
        assert _clean(TALON_DIFFERENCES[case.name]) in output, output
        return
    # whatever the rules keep of the reply on its own, they keep inside the whole e-mail
    assert preprocess(case.reply).casefold() in output, output
    if case.reply == case.email:  # nothing quoted: every line of it is the request
        lost = [line for line in case.email.splitlines() if _clean(line) not in output]
        assert not lost, output


@pytest.mark.parametrize(
    "case", [c for c in TALON_CASES if c.name not in TALON_DIFFERENCES], ids=lambda c: c.name
)
def test_talon_quoted_part_is_dropped(case: TalonCase) -> None:
    output = preprocess(case.email).casefold()
    kept = [line for line in _distinct_lines(case) if _clean(line) in output]
    assert not kept, f"quoted text kept: {kept}\noutput: {output!r}"


def test_talon_fixtures_are_the_published_ones() -> None:
    """The bytes are the sdist's (sha256), every file is pinned, and the parser above found every
    check it should: 49 inline replies (8 languages besides English) and 12 client e-mails."""
    files = {str(p.relative_to(TALON)) for p in TALON.rglob("*") if p.is_file() and p.name != "README.md"}
    assert files == set(TALON_SHA256)
    for name, digest in TALON_SHA256.items():
        assert hashlib.sha256((TALON / name).read_bytes()).hexdigest() == digest, name
    assert len(_talon_inline_cases()) == 49 and len(_talon_standard_cases()) == 12
    assert set(TALON_DIFFERENCES) < {case.name for case in TALON_CASES}
