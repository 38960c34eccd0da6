"""Realistic noisy e-mail / chat tickets wrapped around a clean query.

Banking77 queries are clean one-liners; real tickets arrive as e-mails and chat messages with
greetings, context sentences, personal data, emojis, signatures, legal footers and quoted
threads around the request. This module wraps a clean query in such noise, deterministically
for a given :class:`random.Random`.

Four disjoint template pools exist:

* ``"train"``: noisy augmentation during fine-tuning, and the e-mail rules' first tuning pool;
* ``"dev"``: the e-mail rules' second tuning pool (and, with ``--noise-pools train,dev``, more
  varied augmentation);
* ``"select"``: held out from the rules and from training: only the noisy *validation* tickets
  that ``make experiment`` ranks configurations on;
* ``"eval"``: held out from everything: only the noisy *test* split, scored once.

No greeting, sentence, name, sign-off, footer, device line, emoji or domain appears in two of
them, so a noisy score measures generalisation to unseen noise (for the model and for the
rules), not memorised templates.

Each pool has two contexts: ``"banking77"`` (the default, every entry: context sentences about
accounts, cards and the app, "Hello Bank,", a "Banking Support" thread) and ``None`` (only
entries with no word of Banking77's label vocabulary: greetings, sign-offs, signatures,
disclaimers, device lines, quoted and forwarded threads from a neutral help desk), for
augmenting data of another domain without teaching it banking words.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from functools import cache

POOLS = ("train", "dev", "augment", "select", "eval")
# The seed of the noisy copies every model is measured on (the noisy validation that selects, the
# noisy test that reports): one value, so every model sees the same noisy tickets.
NOISY_SEED = 2024
# Pools that training may draw augmentation from; "select" and "eval" are for measuring only.
TRAINING_POOLS = ("train", "dev", "augment")
# What the noise may say about the domain: "banking77" draws every entry (the measured default,
# with context sentences, greetings, emojis and thread senders written for a bank); None draws only
# domain-neutral entries (no word of Banking77's label vocabulary), for data of any domain.
CONTEXTS = ("banking77", None)


class _B(str):
    """An entry that names Banking77's domain ("Hello Bank,", "I have the premium plan.", a card
    emoji, a "Banking Support" thread): drawn only with ``context="banking77"``."""


class _N(str):
    """A domain-neutral entry drawn only with ``context=None`` (a replacement for the
    domain entries of its field): the Banking77 default never sees it, so its output stays the
    one measured (a test pins its hash)."""


@dataclass(frozen=True)
class TemplatePool:
    """Everything one pool draws from. ``{name}``-style fields are filled at generation time."""

    greetings: tuple[str, ...]
    chat_openers: tuple[str, ...]
    context_before: tuple[str, ...]
    context_after: tuple[str, ...]
    chat_closers: tuple[str, ...]
    signoffs: tuple[str, ...]
    devices: tuple[str, ...]
    footers: tuple[str, ...]
    quoted_headers: tuple[str, ...]
    quoted_bodies: tuple[str, ...]
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    domains: tuple[str, ...]
    emojis: tuple[str, ...]


_TRAIN = TemplatePool(
    greetings=(
        "Hi,",
        "Hello team,",
        "Dear Sir or Madam,",
        "Good morning,",
        "Hey there,",
        _B("Hi support,"),
        "To whom it may concern,",
    ),
    chat_openers=("hey", "hello?", "hi there", "yo", "hiya"),
    context_before=(
        "I hope you are doing well.",
        "I have been a customer of yours for {years} years.",
        _B("My name is {full_name} and my account number is {account}."),
        _B("I tried to find the answer in the app but could not."),
        "Sorry to bother you again.",
        "I am writing to you from abroad at the moment.",
        _B("Customer ID: {account}"),
    ),
    context_after=(
        "You can call me on {phone} if needed.",
        "Please get back to me as soon as possible.",
        "My e-mail is {email}.",
        "This is quite urgent for me.",
        "Reference number: {reference}.",
    ),
    chat_closers=("thx", "pls help", "asap!!", "ty", "??"),
    signoffs=(
        "Best regards,\n{full_name}",
        "Kind regards,\n{first_name}",
        "Thanks,\n{first_name}",
        "Cheers,\n{first_name}",
        "Regards,\n{full_name}\n{phone}",
    ),
    devices=("Sent from my iPhone", "Sent from my Galaxy", "Get Outlook for iOS"),
    footers=(
        "This e-mail and any attachments are confidential and intended solely for the addressee.",
        _B(
            "CONFIDENTIALITY NOTICE: this message may contain privileged information. If you are not "
            "the intended recipient, please delete it."
        ),
        "Please consider the environment before printing this e-mail.",
    ),
    quoted_headers=(
        _B("On {weekday}, {day} {month} {year} at {hour}:{minute}, Support <{support_email}> wrote:"),
        _B(
            "-----Original Message-----\nFrom: Support <{support_email}>\n"
            "Sent: {weekday} {day} {month} {year}"
        ),
        _N("On {weekday}, {day} {month} {year} at {hour}:{minute}, Helpdesk <{support_email}> wrote:"),
        _N(
            "-----Original Message-----\nFrom: Helpdesk <{support_email}>\n"
            "Sent: {weekday} {day} {month} {year}"
        ),
    ),
    quoted_bodies=(
        "Thank you for contacting us. How can we help you today?",
        _B("We have received your request and will reply within 24 hours."),
        "Is there anything else we can help you with?",
    ),
    first_names=("Anna", "James", "Priya", "Lukas", "Maria", "Chen", "Olivia", "Tom"),
    last_names=("Smith", "Novak", "Garcia", "Kowalski", "Brown", "Nguyen", "Müller"),
    domains=("gmail.com", _B("yahoo.co.uk"), "outlook.com"),
    emojis=("😊", "🙏", "😡", "👍", _B("💳")),
)

# Second tuning pool of the e-mail rules (never used in training or evaluation): first written
# as the held-out pool, its first measurement found structures the rules missed (an RFC 3676
# "-- " signature with a "Name | phone" line, 0-prefixed account numbers read as phones), and
# fixing them made it a tuning pool. Real mail clients' own formats (Outlook's header block,
# Apple Mail's "On ..., at ..., X wrote:", Gmail's two-line header).
_DEV = TemplatePool(
    greetings=(
        "Hello,",
        _B("Dear Support Team,"),
        "Good afternoon,",
        "Hi folks,",
        "Dear customer service,",
        "Greetings,",
        "Hello there!",
    ),
    chat_openers=("hi", "hello!!", "hey guys", "good evening", "helloo"),
    context_before=(
        "I hope this message finds you well.",
        _B("I've had an account with you since {year}."),
        _B("This is {full_name}, account no. {account}."),
        "I already checked the FAQ on your website.",
        "Apologies for writing again about this.",
        _B("I'm currently travelling for work."),
        _B("My card number is {card}."),
    ),
    context_after=(
        "Feel free to ring me at {phone}.",
        "I'd appreciate a quick answer.",
        "Please reply to {email}.",
        "I need this sorted today.",
        "Case ref {reference}.",
    ),
    chat_closers=("thanks", "please", "help??", "thank u", "!!!"),
    signoffs=(
        "All the best,\n{full_name}",
        "Talk soon,\n{first_name}",
        "Yours faithfully,\n{full_name}",
        "With appreciation,\n{first_name} {last_name}\nMobile: {phone}",
        "Have a nice day,\n{first_name}\n--\n{full_name} | {phone}",
        "Respectfully,\n{full_name}\nTel. {phone}",
    ),
    devices=("Sent from my iPad", "Sent with Proton Mail secure email", "Get Outlook for Android"),
    footers=(
        "This message and any attachment are confidential and may be privileged.",
        _N("If this message reached you by mistake, please tell the sender and erase it."),
        _B(
            "DISCLAIMER: the information in this e-mail is confidential. If you received it in error, "
            "notify the sender and delete it."
        ),
        _B("You are receiving this because you opted in. Manage your preferences or unsubscribe."),
    ),
    quoted_headers=(
        "On {day} {month} {year}, at {hour}:{minute}, Customer Care <{support_email}> wrote:",
        "From: Customer Care <{support_email}>\nSent: {weekday}, {day} {month} {year} {hour}:{minute}\n"
        "To: {email}\nSubject: RE: your enquiry",
        "On {weekday}, {month} {day}, {year} at {hour}:{minute} Customer Care\n<{support_email}> wrote:",
        "---------- Forwarded message ---------\nFrom: Customer Care <{support_email}>",
    ),
    quoted_bodies=(
        "Thanks for reaching out! Could you tell us a bit more about the issue?",
        "Your ticket has been created. An agent will be in touch shortly.",
        "We are sorry for the inconvenience caused.",
    ),
    first_names=("Sofia", "Ahmed", "Emma", "Rahul", "Lucía", "Jonas", "Grace", "Mateo"),
    last_names=("Johnson", "Rossi", "Silva", "Dubois", "Kim", "Patel", "O'Brien"),
    domains=("hotmail.com", "icloud.com", "proton.me"),
    emojis=("😭", "🤔", "😤", "🙂", _B("💸")),
)

# Augmentation only (never the rules' tuning, never measured): many more phrasings than the
# other pools, so that the model learns to read past context it has not seen rather than
# memorising a dozen sentences. Its context sentences are deliberately close to banking
# (travel, the app, waiting, money, family) without being a request: those were what moved
# the model's answers on the noisy validation tickets (docs/training.md).
_AUGMENT = TemplatePool(
    greetings=(
        "Hi there,",
        "Dear Sir,",
        "Hello everyone,",
        "Good day,",
        _B("Dear Support,"),
        "Hi again,",
        _B("Hello Bank,"),
        "Dear colleagues,",
        "Hey,",
        "Hi, hope you're well,",
        _B("Dear Customer Support Team,"),
        "Afternoon,",
    ),
    chat_openers=("hey hey", "hi hi", "hello hello", "excuse me", "good morning!", "yo team", "hey you"),
    context_before=(
        _B("I have a question about my account."),
        _B("I use your app almost every day."),
        _B("I moved here from {year} onwards and opened the account then."),
        "My husband usually deals with this but he is away.",
        _B("I waited on hold for forty minutes yesterday."),
        "I am visiting my family in Spain this month.",
        "The branch told me to write to you.",
        "I really like your service so far.",
        _B("I'm a student and this is my first bank account."),
        _B("I run a small business and use the account for it."),
        _B("I got a notification on my phone this morning."),
        "This is my third e-mail this week.",
        _B("I'm writing from my work computer."),
        _B("My daughter set the account up for me."),
        _B("I already restarted my phone twice."),
        _B("I checked my statement last night."),
        _B("Account holder: {full_name}, ID {account}."),
        "My membership number is {account}.",
        "I have the premium plan.",
        "I just got back from a trip to Japan.",
        "I'm in a hurry so I'll keep it short.",
        "Please forgive my English.",
        _B("My old bank never had this problem."),
        _B("It's the card ending in {card}."),
        "I was told someone would call me back.",
        "I've been with you for {years} months now.",
        _B("I read the help pages twice."),
        "I'm not very good with technology.",
        "This happened on {weekday} around {hour}:{minute}.",
        _B("I updated the app yesterday."),
    ),
    context_after=(
        "My number is {phone}.",
        "Looking forward to your reply.",
        "You can also reach me at {email}.",
        _B("I'm getting quite frustrated."),
        "My ticket number is {reference}.",
        _B("I will be at work until {hour}:00."),
        "Any help would be great.",
        _B("This is the second time this has happened."),
        "I am travelling again next week.",
        "Please call me after 5pm on {phone}.",
        "Thanks in advance for your help.",
        "I can send screenshots if needed.",
        "Let me know if you need more details.",
        "My wife has the same issue.",
    ),
    chat_closers=("thank youu", "help pls", "hurry pls", "thanx", "?!", "many thx", "cheers mate"),
    signoffs=(
        "Thank you,\n{full_name}",
        "Warm regards,\n{first_name}",
        _B("Sincerely,\n{full_name}\nAccount {account}"),
        "Much obliged,\n{first_name} {last_name}",
        "Thanks heaps,\n{first_name}",
        _B("Kind thanks,\n{first_name}\nPhone: {phone}\nEmail: {email}"),
        "Thanks a lot,\n{first_name}\n\n{full_name}\nOperations Manager",
        "All best,\n{first_name}\n{full_name} | Mob {phone}",
        "Yours truly,\n{full_name}",
        "Greetings from {first_name},\n{full_name}",
    ),
    devices=(
        "Sent from my iPhone 14",
        _B("Sent from my Huawei phone"),
        "Sent from my Xperia",
        "Sent from my BlackBerry",
        _B("Sent via the Samsung Email app"),
    ),
    footers=(
        _B(
            "The information contained in this communication is confidential and intended only for "
            "the use of the recipient."
        ),
        "Our company is authorised and regulated by the Financial Conduct Authority.",
        "This mailbox is not monitored.",
        "Think green: keep it on the screen.",
        "Acme Trading GmbH, Amtsgericht Berlin HRB {account}, Managing Director: {full_name}.",
        "Registered office: 10 Market Street, Leeds. VAT number GB{account}.",
        "No contracts may be concluded on behalf of the company by means of e-mail.",
    ),
    quoted_headers=(
        _B("On {day}.{month}.{year} {hour}:{minute}, Support Desk <{support_email}> wrote:"),
        _B("Am {weekday}, {day}. {month} {year} um {hour}:{minute} schrieb Support Desk <{support_email}>:"),
        _B(
            "From: Support Desk <{support_email}>\nDate: {weekday}, {day} {month} {year}\n"
            "Subject: Your request"
        ),
        _B("-----Original Message-----\nFrom: Support Desk\nSent: {day} {month} {year}\nTo: {full_name}"),
        _B("{weekday} {day} {month} {year}, Support Desk <{support_email}> wrote:"),
        _N("On {day}.{month}.{year} {hour}:{minute}, Service Desk <{support_email}> wrote:"),
        _N("Am {weekday}, {day}. {month} {year} um {hour}:{minute} schrieb Service Desk <{support_email}>:"),
        _N(
            "From: Service Desk <{support_email}>\nDate: {weekday}, {day} {month} {year}\n"
            "Subject: Your question"
        ),
    ),
    quoted_bodies=(
        "Dear customer, we are looking into it.",
        "Please reply to this message with more details.",
        _B("Our opening hours are 9 to 5, Monday to Friday."),
        _B("Have you tried reinstalling the app?"),
    ),
    first_names=(
        "Elena",
        "Omar",
        "Isabel",
        "Viktor",
        "Nadia",
        "Samuel",
        "Astrid",
        "Tariq",
        "Beatriz",
        "Felix",
    ),
    last_names=("Horvat", "Mensah", "Lindgren", "Petrov", "Castillo", "Yilmaz", "Schneider", "Murphy"),
    domains=("t-online.de", "orange.fr", "zoho.com", "libero.it"),
    emojis=("😢", "🥲", "🥺", "💶", _B("📱"), "⏳", "🤷"),
)

# Held out from the rules and from training; only the noisy validation split that experiments
# rank on (issue #13: choose on a pool the rules were not tuned on and the test never uses).
# Written after the rules were final, with the formats of other real clients (Android's
# "-------- Original message --------", Yahoo/Samsung device lines, UK company footers).
_SELECT = TemplatePool(
    greetings=(
        "Hi all,",
        "Dear Team,",
        "Evening,",
        _B("Hello support team,"),
        "Hi guys,",
        "Dear Madam,",
        "Hiya,",
    ),
    chat_openers=("hii", _B("hey support"), "morning folks", "hallo", "oi"),
    context_before=(
        "Hope all is well on your end.",
        _N("Writing this during my lunch break."),
        _N("Hope this is the right place to write."),
        _N("Bear with me, this is a bit long."),
        _B("I opened my account back in {year}."),
        _B("Name on the account: {full_name}, number {account}."),
        _B("Nobody on the phone line could help me."),
        _B("Second time I'm asking about this."),
        _B("I'm on holiday right now."),
        _B("It's about my card {card}."),
    ),
    context_after=(
        "Text me on {phone} please.",
        "Hoping to hear back soon.",
        "Write to me at {email} instead.",
        "It's been going on for days.",
        "My reference is {reference}.",
    ),
    chat_closers=("thanks!!", "plz", "any help?", "tyvm", "ok?"),
    signoffs=(
        "Many thanks,\n{full_name}",
        "Speak soon,\n{first_name}",
        "Best wishes,\n{first_name} {last_name}",
        _B("With thanks,\n{full_name}\nPhone: {phone}"),
        "Ciao,\n{first_name}",
        "Best,\n{first_name}\n{full_name} · {email}",
    ),
    devices=(
        "Sent from my Samsung Galaxy smartphone.",
        "Sent from Yahoo Mail on Android",
        "Sent from Outlook",
    ),
    footers=(
        "Any views expressed in this message are those of the individual sender.",
        "This message is for the addressee only. If you are not the addressee, do not read, copy or "
        "forward it.",
        "Registered in England and Wales. Company number {account}.",
    ),
    quoted_headers=(
        _N("On {day} {month} {year} {hour}:{minute}, Help Centre <{support_email}> wrote:"),
        _N("-------- Original message --------\nFrom: Help Centre <{support_email}>"),
        _B("On {day} {month} {year} {hour}:{minute}, Banking Support <{support_email}> wrote:"),
        _B(
            "From: Banking Support <{support_email}>\nDate: {weekday}, {day} {month} {year}\n"
            "Subject: Re: your message"
        ),
        _B("-------- Original message --------\nFrom: Banking Support <{support_email}>"),
    ),
    quoted_bodies=(
        "Many thanks for your message. We will look into it.",
        "Could you send us a screenshot of the error?",
        _B("Your request reference is below."),
    ),
    first_names=("Oliver", "Zara", "Ethan", "Ingrid", "Marco", "Yuki", "Samir", "Chloe"),
    last_names=("Taylor", "Ivanova", "Haddad", "Lindqvist", "Romero", "Sato", "Evans"),
    domains=("mail.com", "btinternet.com", "web.de"),
    emojis=("😅", "😕", "😠", "👋", _B("💰")),
)

# Held out: written after the e-mail rules were final (tuned on _TRAIN and _DEV) and used only
# to build the noisy test set; nothing was changed after measuring on it.
_EVAL = TemplatePool(
    greetings=(
        "Hey team,",
        "Dear Sirs,",
        "Morning,",
        _B("Hi there support,"),
        "Dear Help Desk,",
        "Salutations,",
        "Hello again,",
    ),
    chat_openers=("heyy", "hi team", _B("hello support"), "morning", "sup"),
    context_before=(
        "Quick question for you.",
        "Long-time customer here, first time writing in.",
        "Writing on behalf of my partner, {full_name} (customer no. {account}).",
        "Your chatbot could not answer this.",
        "Following up on my call from last week.",
        "I'm abroad until the {day}th.",
        _B("The card ending {card} is the one I mean."),
    ),
    context_after=(
        "Best number to reach me is {phone}.",
        "A reply today would be great.",
        _B("My alternate address is {email}."),
        _B("This has happened twice now."),
        "Ticket no. {reference}.",
    ),
    chat_closers=("cheers!", "ta", "pls", "asap pls", "???"),
    signoffs=(
        "Kindest regards,\n{full_name}",
        "Thanks so much,\n{first_name}",
        "Looking forward to hearing from you,\n{full_name}",
        "Yours sincerely,\n{first_name} {last_name}\nCell: {phone}",
        "Take care,\n{first_name}\n{phone} | {email}",
        "Warmly,\n{full_name}",
    ),
    devices=("Sent from my Pixel", "Sent from Mail for Windows", "Get Outlook for Mac"),
    footers=(
        _B(
            "IMPORTANT: This email is intended for the named recipient only and may contain privileged "
            "information."
        ),
        "This email has been checked for viruses by antivirus software.",
        "Please do not print this email unless it is really necessary.",
    ),
    quoted_headers=(
        "On {weekday} {day}/{month}/{year} {hour}:{minute}, Client Services <{support_email}> wrote:",
        "________________________________\nFrom: Client Services <{support_email}>\nSent: {day} {month} "
        "{year} {hour}:{minute}\nTo: {email}\nSubject: Re: case update",
        "-----Original Message-----\nFrom: Client Services [mailto:{support_email}]\nSent: {weekday}",
    ),
    quoted_bodies=(
        _B("Hi, thanks for getting in touch. Can you confirm your date of birth?"),
        "We have escalated your case to the relevant team.",
        "Kind regards, Client Services",
    ),
    first_names=("Noah", "Aisha", "Liam", "Mei", "Kofi", "Freya", "Diego", "Hannah"),
    last_names=("Walsh", "Okafor", "Andersen", "Tanaka", "Moreau", "Costa", "Fischer"),
    domains=("gmx.de", "aol.com", "fastmail.com"),
    emojis=("😩", "🙄", "😬", "🤞", _B("🏦")),
)

_POOL_BY_NAME = {"train": _TRAIN, "dev": _DEV, "augment": _AUGMENT, "select": _SELECT, "eval": _EVAL}
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@cache
def get_pool(pool: str, context: str | None = "banking77") -> TemplatePool:
    """The templates of ``pool`` for ``context`` (see :data:`CONTEXTS`)."""
    try:
        templates = _POOL_BY_NAME[pool]
    except KeyError:
        raise ValueError(f"unknown noise pool {pool!r}; choose one of {POOLS}") from None
    if context not in CONTEXTS:
        raise ValueError(f"unknown noise context {context!r}; choose one of {CONTEXTS}")
    left_out = _N if context == "banking77" else _B
    return TemplatePool(
        **{
            field.name: tuple(e for e in getattr(templates, field.name) if not isinstance(e, left_out))
            for field in dataclasses.fields(templates)
        }
    )


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _fields(rng: random.Random, pool: TemplatePool, context: str | None) -> dict[str, str]:
    first, last = rng.choice(pool.first_names), rng.choice(pool.last_names)
    phone = rng.choice(
        (
            f"+44 7{_digits(rng, 3)} {_digits(rng, 6)}",
            f"({_digits(rng, 3)}) {_digits(rng, 3)}-{_digits(rng, 4)}",
            f"07{_digits(rng, 3)} {_digits(rng, 3)} {_digits(rng, 3)}",
            f"+49 {_digits(rng, 3)} {_digits(rng, 7)}",
        )
    )
    card = " ".join(_digits(rng, 4) for _ in range(4))
    return {
        "first_name": first,
        "last_name": last,
        "full_name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower().replace(chr(39), '')}{rng.randint(1, 99)}@"
        f"{rng.choice(pool.domains)}",
        "support_email": f"support@{rng.choice(('bank.example', 'help.example.com'))}"
        if context == "banking77"
        else f"helpdesk@{rng.choice(('example.org', 'help.example.com'))}",
        "phone": phone,
        "account": _digits(rng, rng.choice((8, 10, 12))),
        "card": rng.choice((card, card.replace(" ", ""), card.replace(" ", "-"))),
        # two random letters can spell a domain word ("EU", "ID"): digits only in the neutral context
        "reference": f"{rng.choice('ABCDEFGHJK')}{rng.choice('LMNPRSTUVW')}-{_digits(rng, 6)}"
        if context == "banking77"
        else f"{_digits(rng, 3)}-{_digits(rng, 6)}",
        "years": str(rng.randint(2, 15)),
        "year": str(rng.randint(2015, 2025)),
        "weekday": rng.choice(_WEEKDAYS),
        "month": rng.choice(_MONTHS),
        "day": str(rng.randint(1, 28)),
        "hour": f"{rng.randint(7, 22):02d}",
        "minute": f"{rng.randint(0, 59):02d}",
    }


def _email_style(text: str, rng: random.Random, pool: TemplatePool, f: dict[str, str]) -> str:
    parts: list[str] = []
    if rng.random() < 0.8:
        parts.append(rng.choice(pool.greetings))
    body: list[str] = []
    if rng.random() < 0.6:
        body.extend(rng.sample(pool.context_before, rng.choice((1, 1, 2))))
    query = text
    if rng.random() < 0.25:
        query = f"{query} {rng.choice(pool.emojis)}"
    body.append(query)
    if rng.random() < 0.45:
        body.append(rng.choice(pool.context_after))
    # Context sentences share the request's paragraph half of the time, as people write.
    if rng.random() < 0.5:
        parts.append(" ".join(body))
    else:
        parts.extend(body)
    if rng.random() < 0.75:
        parts.append(rng.choice(pool.signoffs))
    if rng.random() < 0.3:
        parts.append(rng.choice(pool.devices))
    if rng.random() < 0.25:
        parts.append(rng.choice(pool.footers))
    if rng.random() < 0.3:
        header = rng.choice(pool.quoted_headers)
        quoted = [f"> {line}" for line in rng.sample(pool.quoted_bodies, 2)]
        parts.append(header + "\n" + "\n".join(quoted))
    sep = rng.choice(("\n\n", "\n"))
    return sep.join(parts).format(**f)


def _chat_style(text: str, rng: random.Random, pool: TemplatePool, f: dict[str, str]) -> str:
    words: list[str] = []
    if rng.random() < 0.7:
        suffix = rng.choice(("", " ", ",", " " + rng.choice(pool.emojis)))
        words.append(rng.choice(pool.chat_openers) + suffix)
    if rng.random() < 0.3:
        words.append(rng.choice(pool.context_before))
    words.append(text if rng.random() < 0.6 else text.lower())
    if rng.random() < 0.3:
        words.append(rng.choice(pool.context_after))
    if rng.random() < 0.6:
        words.append(rng.choice(pool.chat_closers))
    if rng.random() < 0.4:
        words.append(rng.choice(pool.emojis) * rng.choice((1, 1, 2, 3)))
    return " ".join(w.strip() for w in words if w.strip()).format(**f)


def make_noisy(text: str, rng: random.Random, pool: str = "eval", context: str | None = "banking77") -> str:
    """Wrap one clean query in e-mail (70%) or chat (30%) noise drawn from ``pool``, with the
    entries of ``context`` (:data:`CONTEXTS`)."""
    templates = get_pool(pool, context)
    fields = _fields(rng, templates, context)
    text = text.strip().replace("{", "{{").replace("}", "}}")
    if rng.random() < 0.7:
        return _email_style(text, rng, templates, fields)
    return _chat_style(text, rng, templates, fields)


def noisy_variant(
    texts: list[str], seed: int, pool: str = "eval", context: str | None = "banking77"
) -> list[str]:
    """Noisy copies of ``texts``, identical for the same ``seed``, ``pool`` and ``context``."""
    rng = random.Random(f"{pool}:{seed}")
    return [make_noisy(t, rng, pool, context) for t in texts]


def measure_rules(
    queries: list[str], seed: int = 5, context: str | None = "banking77"
) -> dict[str, dict[str, float]]:
    """How the e-mail rules do on each pool: the share of wrapped queries whose cleaned query is
    still in the model input, and the share of the raw characters left (docs/training.md)."""
    from triage_core.preprocessing import preprocess

    report = {}
    for pool in POOLS:
        noisy = noisy_variant(queries, seed=seed, pool=pool, context=context)
        cleaned = [preprocess(text) for text in noisy]
        kept = sum(preprocess(q).lower() in c.lower() for q, c in zip(queries, cleaned, strict=True))
        report[pool] = {
            "requests_kept": kept,
            "queries": len(queries),
            "chars_left": round(sum(map(len, cleaned)) / sum(map(len, noisy)), 2),
        }
    return report


if __name__ == "__main__":  # python -m training.noise [train.csv]: the rules' measurement per pool
    import json
    import sys

    from training.data import load_tickets

    tickets = load_tickets(sys.argv[1] if len(sys.argv) > 1 else "artifacts/splits/train.csv")
    report = {str(context): measure_rules(tickets.texts[:900], context=context) for context in CONTEXTS}
    print(json.dumps(report, indent=2))
