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
