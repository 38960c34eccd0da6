"""triage_core.preprocessing: what training and serving both feed the model."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.noise import noisy_variant
from triage_core.preprocessing import (
    ACCOUNT_TOKEN,
    CARD_TOKEN,
    EMAIL_TOKEN,
    PHONE_TOKEN,
    URL_TOKEN,
    PreprocessConfig,
    extract_request,
    mask_pii,
    preprocess,
    preprocess_batch,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe+bank@mail.example.co.uk please", f"mail me at {EMAIL_TOKEN} please"),
        ("see https://bank.example/help?x=1 or www.bank.example", f"see {URL_TOKEN} or {URL_TOKEN}"),
        ("card 4111 1111 1111 1111 was charged", f"card {CARD_TOKEN} was charged"),
        ("card 4111-1111-1111-1111 was charged", f"card {CARD_TOKEN} was charged"),
        ("card 4111111111111111 was charged", f"card {CARD_TOKEN} was charged"),
        ("call +44 7700 900123 now", f"call {PHONE_TOKEN} now"),
        ("call (555) 123-4567 now", f"call {PHONE_TOKEN} now"),
        ("I was charged 25 euros twice on 12 May", "I was charged 25 euros twice on 12 May"),
        ("transfer of 1500 to my account", "transfer of 1500 to my account"),
        # dates, times and amounts are content: kept as written, never read as phone numbers
        ("paid on 12.03.2024 at 10:14", "paid on 12.03.2024 at 10:14"),
        ("since 2024-03-12 and 3/12/24", "since 2024-03-12 and 3/12/24"),
        (
            "charged €1,500.00 and $25 and 1.234,56 EUR and GBP 40",
            "charged €1,500.00 and $25 and 1.234,56 EUR and GBP 40",
        ),
        ("it cost 12.99 then 1,250 pounds", "it cost 12.99 then 1,250 pounds"),
        # account and reference numbers, IBANs: masked as what they are
        ("my account 12345678 was debited", f"my account {ACCOUNT_TOKEN} was debited"),
        ("account no. 0497768502", f"account no. {ACCOUNT_TOKEN}"),
        ("IBAN GB82 WEST 1234 5698 7654 32 please", f"IBAN {ACCOUNT_TOKEN} please"),
        ("IBAN DE89370400440532013000", f"IBAN {ACCOUNT_TOKEN}"),
        ("ring 07700 900 123 or 555-123-4567", f"ring {PHONE_TOKEN} or {PHONE_TOKEN}"),
        ("call 0044 20 7946 0958", f"call {PHONE_TOKEN}"),
    ],
)
def test_pii_masking(text: str, expected: str) -> None:
    assert mask_pii(text) == expected


def test_masking_can_be_turned_off() -> None:
    text = "write to a@b.example"
    assert preprocess(text, PreprocessConfig(mask_pii=False)) == text
    assert preprocess(text) == f"write to {EMAIL_TOKEN}"


def test_emojis_mapped_to_text_removed_or_kept() -> None:
    text = "my card is blocked 😡🙏"
    assert preprocess(text) == "my card is blocked enraged face folded hands"
    assert preprocess(text, PreprocessConfig(emojis="remove")) == "my card is blocked"
    assert preprocess(text, PreprocessConfig(emojis="keep")) == text


def test_unicode_whitespace_and_control_characters() -> None:
    assert preprocess("ｆｕｌｌ\u00a0width\tand\u200bzero\x07width\n\n") == "full width and zero width"
    assert preprocess("   ") == "" and preprocess("") == ""
    assert preprocess("café", PreprocessConfig(unicode_form="none")) == "café"


EMAIL = """Dear Support Team,

I hope this message finds you well. My card payment was declined at the supermarket, why?

Many thanks,
Sofia Dubois
Mobile: +44 7700 900123

Sent from my iPad

This message is confidential and intended only for the person to whom it is addressed.

On Tue, Mar 3, 2025 at 10:14 Customer Care <support@bank.example> wrote:
> Thanks for reaching out! Could you tell us a bit more about the issue?
"""


def test_email_request_is_extracted() -> None:
    cleaned = preprocess(EMAIL)
    assert "My card payment was declined at the supermarket, why?" in cleaned
    for noise in ("Dear", "Sofia", "Sent from", "confidential", "wrote", "reaching out", PHONE_TOKEN):
        assert noise not in cleaned, noise


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hey there how do I top up by cheque?", "how do I top up by cheque?"),
        # "there" and a lowercase verb start the request (lost before: the noise pools' only misses)
        ("hey there must have been a mistake, why?", "there must have been a mistake, why?"),
        ("helloo There is a withdrawal waiting.", "There is a withdrawal waiting."),
        ("hii there is a 1 EUR fee", "there is a 1 EUR fee"),
        ("hi there Can I get an update on my card?", "Can I get an update on my card?"),
        ("Hello!! 😀 my card is lost", "grinning face my card is lost"),
        ("good evening, is there a fee for transfers", "is there a fee for transfers"),
        ("Hiking abroad: my card was swallowed", "Hiking abroad: my card was swallowed"),
        # a comma after the first words does not make them a salutation: they are the request
        ("hey i've got the card, how do i enable it?", "i've got the card, how do i enable it?"),
        (
            "good evening I bought something abroad, and the rate was wrong.",
            "I bought something abroad, and the rate was wrong.",
        ),
        ("hello hello Last Saturday, I was charged extra.", "Last Saturday, I was charged extra."),
        ("Dear Jane Doe,\nWhere is my card?", "Where is my card?"),
        ("Hello everyone, my top up failed", "my top up failed"),
        ("hi", "hi"),  # nothing else to keep: the greeting stays rather than an empty ticket
        ("Thanks!\nWhere is my refund?", "Where is my refund?"),
        ("-----Original Message-----\nFrom: x", "-----Original Message-----\nFrom: x"),
    ],
)
def test_greetings_and_chat_openers(text: str, expected: str) -> None:
    assert preprocess(text, PreprocessConfig(mask_pii=False)) == " ".join(expected.split())


def test_extraction_off_keeps_everything() -> None:
    assert "Sofia" in preprocess(EMAIL, PreprocessConfig(extract_request=False))
    assert extract_request("plain question") == "plain question"


@pytest.mark.parametrize("pool", ["train", "dev"])
def test_noisy_tickets_keep_the_query_and_lose_most_noise(pool: str) -> None:
    """On the pools the rules were tuned on: the request survives, the wrapping is gone."""
    queries = ["Why was my transfer declined", "How do I top up by cheque", "Where is my new card"] * 40
    noisy = noisy_variant(queries, seed=3, pool=pool)
    cleaned = preprocess_batch(noisy)
    kept = sum(q.lower() in c.lower() for q, c in zip(queries, cleaned, strict=True))
    assert kept == len(queries)  # the request always survives
    raw_len = sum(len(n) for n in noisy)
    assert sum(len(c) for c in cleaned) < 0.6 * raw_len  # most of the wrapping is gone
    assert not any("@" in c or "wrote:" in c or "Sent from" in c for c in cleaned)


def test_stopwords_option_is_off_by_default() -> None:
    text = "Why is my card not working"
    assert preprocess(text) == text  # "not" matters to a transformer: kept by default
    assert preprocess(text, PreprocessConfig(remove_stopwords=True)) == "Why card not working"


def test_length_caps_and_linear_time_on_pasted_blobs() -> None:
    config = PreprocessConfig(max_chars=100)
    assert len(preprocess("word " * 1000, config)) == 100
    for blob in ("QUJD" * 250_000, "a@" + "b" * 500_000, "1 " * 500_000, "x." * 500_000):
        started = time.perf_counter()
        out = preprocess(blob)
        assert time.perf_counter() - started < 0.5
        assert len(out) <= PreprocessConfig().max_chars


def test_head_truncation_keeps_the_start_of_a_long_ticket(minilm_path) -> None:
    """The documented choice: the tokenizer keeps the first max_length tokens (the request)."""
    from triage_core.inference import TicketTokenizer

    tokenizer = TicketTokenizer(minilm_path / "tokenizer.json", max_length=16, input_names=["input_ids"])
    text = preprocess("my card was stolen yesterday " + "and then some unrelated story " * 50)
    (encoding,) = tokenizer.encode([text])
    assert len(encoding.ids) == 16
    assert [tokenizer.tokenizer.id_to_token(i) for i in encoding.ids[1:5]] == ["my", "card", "was", "stolen"]


def test_config_is_strict_and_serialisable() -> None:
    config = PreprocessConfig(emojis="remove", mask_pii=False)
    assert PreprocessConfig.model_validate_json(config.model_dump_json()) == config
    with pytest.raises(ValueError):
        PreprocessConfig(emojis="shout")
    with pytest.raises(ValueError):
        PreprocessConfig(unknown_option=True)


# --- request extraction never cuts the body (issue #13) ----------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a line that only starts like a header or a closing is content
        (
            "I was charged twice.\nFrom: the app it shows two payments",
            "I was charged twice. From: the app it shows two payments",
        ),
        (
            "Sincerely confused here.\nWhy was my card declined?",
            "Sincerely confused here. Why was my card declined?",
        ),
        (
            "Regards the fee: why 2 euros?\nIt was a transfer.",
            "Regards the fee: why 2 euros? It was a transfer.",
        ),
        # an interleaved quote is history, the answer under it is the request
        (
            "Where is my refund?\n> we said 3 days\nIt has been a week.",
            "Where is my refund? It has been a week.",
        ),
        # a short capitalised line is content unless a closing stands above it
        ("Card Declined\nWhy was it declined at the shop?", "Card Declined Why was it declined at the shop?"),
        ("My top up failed.\nPlease Help", "My top up failed. Please Help"),
        # the client formats of tests/core/test_real_client_emails.py need the client's own layout:
        # a header starting with "On" but without Zoho's dashes, or wrapped over three lines
        # without an address, is a sentence
        (
            "On Monday your agent wrote that my refund was sent\nbut nothing arrived. Where is it?",
            "On Monday your agent wrote that my refund was sent but nothing arrived. Where is it?",
        ),
        (
            'On Monday the app showed an error\nand the support chat\nwrote:\n"payment declined". Why?',
            'On Monday the app showed an error and the support chat wrote: "payment declined". Why?',
        ),
        # "Sent from my ..." ends the reply only as a short paragraph of its own, without punctuation
        (
            "My top up failed twice.\n\nSent from my phone, the app shows an error\n\nthen it logs me out.",
            "My top up failed twice. Sent from my phone, the app shows an error then it logs me out.",
        ),
        (
            "I paid my rent yesterday.\nSent from my savings account\nbut it is still pending. Why?",
            "I paid my rent yesterday. Sent from my savings account but it is still pending. Why?",
        ),
        # a sign-off with a blank line above the name: what follows in the first person stays
        (
            "Where is my card?\n\nThanks,\n\nJane\nmy old card still works, should I cut it up?",
            "Where is my card? Thanks, Jane my old card still works, should I cut it up?",
        ),
        # a mailing-list footer is only "<list-name> mailing list"
        (
            "Can you stop the promotional e-mails?\nPlease take me off your mailing list",
            "Can you stop the promotional e-mails? Please take me off your mailing list",
        ),
    ],
)
def test_extraction_keeps_the_body(text: str, expected: str) -> None:
    assert preprocess(text, PreprocessConfig(mask_pii=False)) == expected


OUTLOOK_REPLY = """Hi,

My transfer to my landlord is still pending since 02/03/2025, can you check?

Kind regards,
Jane Doe
Senior Accountant
Tel: +44 20 7946 0958

________________________________
From: Customer Support <support@bank.example>
Sent: Monday, 3 March 2025 10:14
To: Jane Doe <jane.doe@example.com>
Subject: RE: Transfer pending

Dear Jane, thank you for your message.
"""

GMAIL_REPLY = """why was my card payment declined at the petrol station? i had money on the account

On Tue, 4 Mar 2025 at 09:12, Bank Support <
support@bank.example> wrote:

> Hello, how can we help?
"""

RFC_SIGNATURE = """Hello,
I can't find the exchange rate you used for my payment of $120.50 on 12.03.2024.
Thanks a lot,
Tom
--
Tom Becker | +49 30 901820 | tom@example.org
Sent with Proton Mail secure email."""

FORWARDED = """FYI, this is the third time. I want a refund for the duplicate charge.

---------- Forwarded message ---------
From: Bank <noreply@bank.example>
Date: Wed, 5 Mar 2025
Subject: Your payment
"""

# A company footer whose words no rule knows, under a sign-off and a name (UK and German
# companies print their registration in every e-mail).
COMPANY_FOOTER = """Good morning,

The card I ordered last month never arrived. Could you send a new one to my office?

Many thanks,
Priti Shah
Sent from my Pixel 8
Brightline Analytics Ltd. Registered in Scotland No. SC123456. Registered office: Edinburgh EH2 2PR.
Geschäftsführer: P. Shah, Amtsgericht München HRB 12345"""

# A bottom post (the reply under the '>'-quoted question, nothing but a greeting above the header)
# from a mailing list: the reply is what is left.
BOTTOM_POST = """Hello,

On Tue, 4 Mar 2025 at 09:12, Bank Support <support@bank.example> wrote:
> Could you tell us the date and the amount of the payment?

It was on 3 March, 25 euros at the petrol station. Why was it declined?

Thanks,
Jane

_______________________________________________
customers mailing list
customers@lists.bank.example
https://lists.bank.example/listinfo/customers
"""

# A P.S. is content: the sign-off above it is cut (issue #20), the postscript kept.
POSTSCRIPT = """Where is my card?
Thanks,
Jane
P.S. my old card still works, should I cut it up?"""


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        (
            COMPANY_FOOTER,
            "The card I ordered last month never arrived. Could you send a new one to my office?",
        ),
        (
            POSTSCRIPT,
            "Where is my card? P.S. my old card still works, should I cut it up?",
        ),
        (OUTLOOK_REPLY, "My transfer to my landlord is still pending since 02/03/2025, can you check?"),
        (GMAIL_REPLY, "why was my card payment declined at the petrol station? i had money on the account"),
        (RFC_SIGNATURE, "I can't find the exchange rate you used for my payment of $120.50 on 12.03.2024."),
        (FORWARDED, "FYI, this is the third time. I want a refund for the duplicate charge."),
        (BOTTOM_POST, "It was on 3 March, 25 euros at the petrol station. Why was it declined?"),
    ],
)
def test_real_looking_emails(email: str, expected: str) -> None:
    assert preprocess(email) == expected


def test_bottom_post_without_a_reply_keeps_the_quote() -> None:
    """Only a greeting above the quote and nothing under it: no reply to take, nothing is cut."""
    text = "Hi,\nOn Tue, 4 Mar 2025 at 09:12, Bank <support@bank.example> wrote:\n> Where is my card?\n"
    assert "Where is my card?" in preprocess(text)


@pytest.mark.parametrize("held_out", ["select", "eval"])
def test_rules_do_not_name_the_held_out_noise(held_out: str) -> None:
    """The e-mail rules were tuned on the train and dev pools (and one structural rule on the
    select pool's misses); the eval pool (noisy test) is held out: none of the multi-word phrases
    of either appears in the rules' source."""
    import dataclasses
    import inspect
    import re

    import triage_core.preprocessing as module
    from training.noise import get_pool

    source = re.sub(r"[^a-z ]+", " ", inspect.getsource(module).lower())
    source = " ".join(source.split())
    pool = get_pool(held_out)
    checked = 0
    for field in dataclasses.fields(pool):
        if field.name in ("first_names", "last_names", "domains", "emojis"):
            continue
        for phrase in getattr(pool, field.name):
            words = re.sub(r"\{[a-z_]+\}|[^a-z ]+", " ", phrase.lower()).split()[:4]
            if len(words) >= 2:
                checked += 1
                assert " ".join(words) not in source, (field.name, phrase)
    assert checked > 30


@pytest.mark.parametrize("held_out", ["select", "eval"])
def test_held_out_noise_never_loses_the_request(held_out: str) -> None:
    queries = ["Why was my transfer declined", "How do I top up by cheque", "Where is my new card"] * 40
    noisy = noisy_variant(queries, seed=3, pool=held_out)
    cleaned = preprocess_batch(noisy)
    assert all(q.lower() in c.lower() for q, c in zip(queries, cleaned, strict=True))
    assert sum(len(c) for c in cleaned) < 0.8 * sum(len(n) for n in noisy)


# Issue #20: the e-mail rules cut the request in common shapes (5 of 15 realistic e-mails lost
# content, 3 changed label). Each case: the e-mail, sentences that must reach the model (cleaned
# the way preprocess cleans any text, compared case-insensitively) and signature text that must
# not. Ten of them lost content (or, one, kept the sign-off above a P.S.) with main's rules at
# 16e8e8a: transfer and payment details as From:/To:/Date: lines, a last line "Sent from my
# account ...", a "--" between two parts of the request, a P.S. under the signature; the others
# (a P.S. with a question or above the sign-off, a real "-- " signature, device line and
# forwarded header) stay as they were.
ISSUE_20_SHAPES = [
    pytest.param(
        (
            "Hi,\n\nI made a transfer yesterday and it has not arrived.\nFrom: my savings account\n"
            "To: my current account\nAmount: 200 GBP\nDate: 3 March\n\nCan you check where it is?\n\n"
            "Thanks,\nAnna"
        ),
        (
            "From: my savings account",
            "To: my current account",
            "Amount: 200 GBP",
            "Can you check where it is?",
        ),
        ("Anna",),
        id="transfer-from-to-lines",
    ),
    pytest.param(
        "I got a payment I don't recognise:\nFrom: John Smith\nDate: 12 March 2025\n"
        "Amount: 50 EUR\nWhat is it?",
        ("From: John Smith", "Date: 12 March 2025", "Amount: 50 EUR", "What is it?"),
        (),
        id="payment-details-with-a-name-and-a-date",
    ),
    pytest.param(
        "Hello,\nPlease cancel this transfer:\nFrom: joint account\nTo: Mark Jones\nSent: 12 May, 450 EUR",
        ("Please cancel this transfer:", "From: joint account", "To: Mark Jones", "450 EUR"),
        (),
        id="transfer-from-to-at-end",
    ),
    pytest.param(
        (
            "Hi team,\nI keep getting e-mails I did not ask for.\nFrom: offers@shop.example\n"
            "Subject: your prize\nHow do I stop these from reaching me?\n\nThanks"
        ),
        ("I keep getting e-mails I did not ask for.", "How do I stop these from reaching me?"),
        (),
        id="from-line-with-address-is-content",
    ),
    pytest.param(
        "Hello,\n\nI sent money to my brother.\nSent from my account 3 days ago and still not received",
        ("I sent money to my brother.", "Sent from my account 3 days ago and still not received"),
        (),
        id="sent-from-my-account-last-line",
    ),
    pytest.param(
        "Sent from my account 3 days ago and still not received",
        ("Sent from my account 3 days ago and still not received",),
        (),
        id="sent-from-my-account-alone",
    ),
    pytest.param(
        "Hi,\nwhy was my payment declined?\nSent via the app on Monday, twice, and both failed",
        ("why was my payment declined?", "Sent via the app on Monday, twice, and both failed"),
        (),
        id="sent-via-app-sentence",
    ),
    pytest.param(
        (
            "Hi,\nmy card was declined at the shop today.\n--\n"
            "Also, the app shows a pending payment of 30 EUR that I never made.\nCan you remove it?\n\n"
            "Thanks,\nTom"
        ),
        (
            "my card was declined at the shop today.",
            "the app shows a pending payment of 30 EUR that I never made.",
            "Can you remove it?",
        ),
        ("Tom",),
        id="double-dash-separator-middle",
    ),
    pytest.param(
        "My transfer is pending.\n\nP.S. I also need a new PIN.\n\nThanks,\nAnna Smith\nSent from my iPhone",
        ("My transfer is pending.", "P.S. I also need a new PIN."),
        ("Anna Smith", "Sent from my iPhone"),
        id="ps-above-the-signoff",
    ),
    pytest.param(
        "Card arrived broken\n--\nHow do I order a replacement?",
        ("Card arrived broken", "How do I order a replacement?"),
        (),
        id="double-dash-separator-before-question",
    ),
    pytest.param(
        (
            "Hi,\n\nWhere is my new card? I ordered it two weeks ago.\n\nBest regards,\nPriya Patel\n\n"
            "P.S. Could you also raise my ATM withdrawal limit?"
        ),
        ("Where is my new card?", "P.S. Could you also raise my ATM withdrawal limit?"),
        (),
        id="ps-second-request",
    ),
    pytest.param(
        "Hello,\nmy top-up failed this morning.\nThanks,\nJames\nPS please also close my old savings account",
        ("my top-up failed this morning.", "PS please also close my old savings account"),
        ("James",),
        id="ps-second-request-no-question-mark",
    ),
    pytest.param(
        (
            "Hi,\nthe exchange rate I got was wrong.\n\n-- \nLukas Novak\n+44 7700 900123\n\n"
            "P.S. And I was charged a fee for it too."
        ),
        ("the exchange rate I got was wrong.", "P.S. And I was charged a fee for it too."),
        ("Lukas Novak",),
        id="ps-after-signature-delimiter",
    ),
    pytest.param(
        (
            "Hi,\nmy PIN is blocked, how do I unblock it?\n\n-- \nMaria Garcia\nmaria@mail.example\n"
            "+34 600 123 456"
        ),
        ("my PIN is blocked, how do I unblock it?",),
        ("Maria Garcia",),
        id="real-signature-delimiter-kept-working",
    ),
    pytest.param(
        "Hi,\nmy card still hasn't arrived.\n\nSent from my iPhone",
        ("my card still hasn't arrived.",),
        ("Sent from my iPhone",),
        id="real-device-line-kept-working",
    ),
    pytest.param(
        (
            "Please refund this.\n\nFrom: Shop <orders@shop.example>\nSent: Monday, 3 March 2025 10:14\n"
            "To: me@mail.example\nSubject: Your order\n\nYour order was charged twice."
        ),
        ("Please refund this.",),
        ("Your order was charged twice.",),
        id="real-forwarded-header-kept-working",
    ),
    pytest.param(
        "Thanks,\nbut the refund never arrived. Where is it?",
        ("the refund never arrived.", "Where is it?"),
        (),
        id="closing-then-request",
    ),
]


@pytest.mark.parametrize(("email", "kept", "dropped"), ISSUE_20_SHAPES)
def test_rules_keep_the_request_in_the_shapes_of_issue_20(email: str, kept: tuple, dropped: tuple) -> None:
    def clean(text: str) -> str:
        return preprocess(text, PreprocessConfig(extract_request=False)).casefold()

    output = preprocess(email).casefold()
    assert [k for k in kept if clean(k) not in output] == [], output
    assert [d for d in dropped if clean(d) in output] == [], output
    for text in (*kept, *dropped):  # the check is about this e-mail's own text
        assert clean(text) in clean(email), text


# sha256 of "\x00".join(preprocess_batch(<the 9,999 texts of data/banking77/train.csv>)), computed
# with main's rules at 16e8e8a, before issue #20's changes: a clean ticket has no history or
# signature to cut, so rules that only cut what is certainly noise leave every one as it was.
BANKING77_CLEAN_SHA256 = "eef4692106a182363bdc170863e5313304c454cbcf1e31b783a20e30a4a5136a"


def test_clean_banking77_tickets_are_unchanged_by_the_email_rules() -> None:
    from training.data import load_tickets

    texts = load_tickets(str(Path(__file__).resolve().parents[2] / "data" / "banking77" / "train.csv")).texts
    assert len(texts) == 9999
    digest = hashlib.sha256("\x00".join(preprocess_batch(texts)).encode()).hexdigest()
    assert digest == BANKING77_CLEAN_SHA256


# Generated e-mails for issue #20's rule "when unsure, keep": request lines in the first person,
# mixed with lines that only look like e-mail furniture (field lines with undated, sender-less
# values, "Sent from my <not a device> ...", a "--" between them, a P.S.), under a greeting and
# above a real sign-off. Every one of those lines is content and must reach the model.
_WORD = st.sampled_from(("card", "transfer", "savings", "account", "pending", "refund", "yesterday", "shop"))
_WORD |= st.sampled_from(
    ("money", "days", "ago", "still", "not", "received", "twice", "the", "brother", "cash")
)
_PHRASE = st.lists(_WORD, min_size=1, max_size=6).map(" ".join)
_REQUEST = st.builds(lambda p, end: f"I {p}{end}", _PHRASE, st.sampled_from(["?", ".", "!", ""]))
_LOOKALIKE = st.one_of(
    st.builds(
        lambda f, p: f"{f}: my {p}", st.sampled_from(["From", "To", "Amount", "Date", "Sent", "Cc"]), _PHRASE
    ),
    st.builds(lambda p: f"Sent from my {p}", _PHRASE),
    st.builds(lambda p: f"P.S. I {p}", _PHRASE),
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.one_of(_REQUEST, _LOOKALIKE, st.just("--")), min_size=1, max_size=8),
    greeting=st.sampled_from(["", "Hi,\n", "Dear Sir or Madam,\n\n"]),
    signoff=st.sampled_from(["", "\nThanks,\nAnna", "\n\nBest regards,\nJames Smith\n\nSent from my iPhone"]),
)
def test_generated_requests_with_lookalike_lines_are_kept(
    lines: list[str], greeting: str, signoff: str
) -> None:
    output = preprocess(greeting + "\n".join(lines) + signoff).casefold()
    config = PreprocessConfig(extract_request=False)
    lost = [line for line in lines if line != "--" and preprocess(line, config).casefold() not in output]
    assert not lost, output


# The PII scanner runs only where a match can start (issue #23: near a digit, an "@", "www." or
# "http(s)://"); the scanner run everywhere must agree, and find nothing in a text without them.
_PII_PIECES = st.sampled_from(
    [
        "@",
        "www.",
        "WWW.",
        "http://",
        "https://",
        "4",
        "12",
        "٣",
        "૭",
        "+44 ",
        "(020) ",
        "€",
        "$",
        ".",
        "-",
        "/",
        ":",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=12), _PII_PIECES), max_size=12).map("".join))
def test_mask_pii_with_its_pre_check_equals_the_full_scan(text: str) -> None:
    from triage_core.preprocessing import _PII, _pii

    scanned = _PII.sub(_pii, text)
    assert mask_pii(text) == scanned
    if not re.search(r"[\d@]|www\.|https?://", text, re.IGNORECASE):
        assert _PII.search(text) is None


def test_a_ticket_of_many_postscripts_is_cleaned_not_raised() -> None:
    """``_reply`` read each "P.S." by recursing into the part above it: 1,000 of them passed
    Python's recursion limit and ``preprocess`` raised (its window's tickets failed). A loop now;
    wherever the recursion finished, the loop gives its output (the frozen copy from before issue
    #23 is the oracle, up to a few hundred postscripts)."""
    from benchmarks.preprocessing import frozen_module

    before = frozen_module()
    for n in (1, 2, 3, 50, 300):
        text = "My card was charged twice.\nThanks,\nJane\n" + "P.S. one more thing, why?\n-- \nJane\n" * n
        assert preprocess(text) == before.preprocess(text)
    huge = "Where is my refund?\n" + "P.S. still waiting\n" * 1_000
    assert len(huge) < PreprocessConfig().max_chars * 10  # under the raw cap: all of it is read
    with pytest.raises(RecursionError):
        before.preprocess(huge)
    out = preprocess(huge)
    assert out.startswith("Where is my refund? P.S. still waiting")
    assert len(out) == PreprocessConfig().max_chars
