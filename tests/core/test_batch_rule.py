"""``BatchRule``: how tickets are grouped into ONNX Runtime runs (the server's pool, offline
scoring, the benchmark's limit). Invariants on generated tickets, against a brute-force reading
of the caps."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from triage_core.inference import BatchRule, model_rows


class Item:
    """An ``encode`` item as the rule sees it: ``ids`` (their count) and, for a ``windows``
    ticket, ``parts``; empty ids are a ticket a cascade settled."""

    def __init__(self, length: int, windows: int) -> None:
        self.ids = [0] * length
        self.parts = [0] * windows if windows > 1 else None


items_strategy = st.lists(
    st.tuples(st.integers(0, 600), st.integers(1, 4)).map(lambda t: Item(t[0], t[1] if t[0] else 1)),
    max_size=120,
)
rules = st.builds(
    BatchRule,
    max_batch=st.integers(1, 64),
    max_tokens=st.one_of(st.none(), st.integers(1, 8192)),
    max_padding=st.one_of(st.none(), st.floats(0.0, 2.0)),
)


@settings(max_examples=300, deadline=None)
@given(items_strategy, rules)
def test_every_ticket_once_shortest_first_and_every_batch_within_the_caps(
    items: list[Item], rule: BatchRule
) -> None:
    batches = rule.batches(items)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(items)))  # nothing lost, nothing twice
    assert all(batches)
    lengths = [len(items[i].ids) for i in flat]
    assert lengths == sorted(lengths)  # shortest first, batch after batch
    for batch in batches:
        width = max(len(items[i].ids) for i in batch)
        rows = sum(model_rows(items[i]) for i in batch)
        tokens = sum(model_rows(items[i]) * len(items[i].ids) for i in batch)
        assert len(batch) <= rule.max_batch
        if rule.max_tokens is not None and len(batch) > 1:
            assert rows * width <= rule.max_tokens
        if rule.max_padding is not None:
            assert rows * width <= (1 + rule.max_padding) * tokens + 1e-9


@settings(max_examples=200, deadline=None)
@given(items_strategy, rules)
def test_a_batch_ends_only_where_a_cap_ends_it(items: list[Item], rule: BatchRule) -> None:
    """Greedy: a batch is never cut while the next length's tickets (all those the size caps
    admit) would have kept it within every cap."""
    batches = rule.batches(items)
    for batch, following in itertools.pairwise(batches):
        first = following[0]
        length = len(items[first].ids)
        same = [i for i in following if len(items[i].ids) == length]
        width = max(length, max(len(items[i].ids) for i in batch))
        rows = sum(model_rows(items[i]) for i in batch) + model_rows(items[first])
        if len(batch) + 1 > rule.max_batch or (
            rule.max_tokens is not None and rows * width > rule.max_tokens
        ):
            continue  # the size caps end it
        # the padding cap: what the candidates of this length bring at best
        more = same[: rule.max_batch - len(batch)]
        all_rows = sum(model_rows(items[i]) for i in batch + more)
        all_tokens = sum(model_rows(items[i]) * len(items[i].ids) for i in batch + more)
        if rule.max_tokens is not None and all_rows * width > rule.max_tokens:
            continue  # (fewer of them: only a worse share)
        assert rule.max_padding is not None and all_rows * width > (1 + rule.max_padding) * all_tokens


def test_the_measured_case_a_long_ticket_starts_its_own_batch() -> None:
    """Ten 10-token tickets and one of 80: batches of 32 would pad the ten to 80 (7.3x the
    cells); the default rule runs the 80-token ticket alone."""
    items = [Item(10, 1) for _ in range(10)] + [Item(80, 1)]
    assert BatchRule().batches(items) == [list(range(10)), [10]]
    assert BatchRule(max_padding=None).batches(items) == [list(range(11))]
