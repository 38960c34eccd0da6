"""The noisy-ticket generator: deterministic, realistic, and with disjoint train/eval pools."""

from __future__ import annotations

import dataclasses
import itertools
import random
import re

import pytest

from training.noise import POOLS, TRAINING_POOLS, get_pool, make_noisy, noisy_variant

QUERIES = ["I am still waiting on my card?", "How do I top up by cheque?", "Why {is} my transfer pending"]


def test_same_seed_same_output_and_different_seed_differs() -> None:
    texts = QUERIES * 20
    assert noisy_variant(texts, seed=7) == noisy_variant(texts, seed=7)
    assert noisy_variant(texts, seed=7) != noisy_variant(texts, seed=8)
    assert noisy_variant(texts, seed=7, pool="train") != noisy_variant(texts, seed=7, pool="eval")


@pytest.mark.parametrize("pool", POOLS)
def test_query_is_kept_verbatim_or_lowercased(pool: str) -> None:
    rng = random.Random(0)
    for _ in range(200):
        query = rng.choice(QUERIES)
        noisy = make_noisy(query, rng, pool)
        assert query in noisy or query.lower() in noisy


@pytest.mark.parametrize("pool", POOLS)
def test_noise_covers_the_realistic_kinds(pool: str) -> None:
    samples = noisy_variant(QUERIES * 100, seed=1, pool=pool)
    joined = "\n".join(samples)
    assert re.search(r"[\w.]+@[\w.]+", joined), "e-mail addresses"
    assert re.search(r"\d{3}[ -]?\d{3}", joined), "phone or account numbers"
    assert re.search(r"wrote:|Original Message|Forwarded message", joined), "quoted threads"
    assert re.search(r"^> ", joined, re.MULTILINE), "quoted lines"
    assert re.search(r"Sent from|Sent with|Get Outlook", joined), "device signatures"
    assert re.search(
        r"confidential|unsubscribe|environment|privileged|viruses|print|addressee|registered in", joined, re.I
    ), "footers"
    assert any(not s.isascii() for s in samples), "emojis"
    assert any("\n" not in s for s in samples) and any("\n" in s for s in samples), "chat and e-mail"
    # noise actually adds text around most queries
    assert sum(len(s) > len(q) + 10 for s, q in zip(samples, QUERIES * 100, strict=True)) > 200


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(POOLS, 2)))
def test_pools_are_disjoint(a: str, b: str) -> None:
    """Augmentation (train), the e-mail rules' second tuning pool (dev), the noisy validation set
    that experiments rank on (select) and the noisy test set (eval) share no phrase, name,
    domain or emoji."""
    first, second = get_pool(a), get_pool(b)

    def heads(pool) -> set[str]:  # "Best,\n{full_name}" and "Best,\n{first_name}" are one sign-off
        return {" ".join(re.sub(r"\{[a-z_]+\}", " ", e.lower()).splitlines()[0].split()) for e in pool}

    for field in dataclasses.fields(first):
        shared = set(getattr(first, field.name)) & set(getattr(second, field.name))
        assert not shared, f"{field.name} shared by {a} and {b}: {shared}"
        if field.name in ("greetings", "signoffs", "context_before", "context_after", "footers"):
            shared = heads(getattr(first, field.name)) & heads(getattr(second, field.name))
            assert not shared, f"{field.name} shared by {a} and {b} up to names and lines below: {shared}"


def test_training_may_draw_only_from_the_tuning_pools() -> None:
    from training.config import TrainConfig

    assert TRAINING_POOLS == ("train", "dev", "augment") and set(TRAINING_POOLS) < set(POOLS)
    assert TrainConfig(noise_pools=["train", "augment"]).noise_pools == ["train", "augment"]
    for held_out in (["select"], ["train", "eval"], []):
        with pytest.raises(ValueError, match="noise_pools"):
            TrainConfig(noise_pools=held_out)


def test_unknown_pool_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown noise pool"):
        noisy_variant(["x"], seed=0, pool="test")


def test_rules_measurement_per_pool() -> None:
    """`python -m training.noise` (the numbers in docs/training.md): every pool's wrapped queries
    keep their request, and the rules drop a good part of the noise around them."""
    from training.noise import measure_rules

    report = measure_rules(QUERIES * 20, seed=5)
    assert set(report) == set(POOLS)
    for pool, row in report.items():
        assert row["queries"] == len(QUERIES) * 20
        assert row["requests_kept"] == row["queries"], pool
        assert 0.3 < row["chars_left"] < 0.8, pool
