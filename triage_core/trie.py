"""Tries over integer codes as hash tables, for the compiled kernels (numba) to walk.

Two kernels look terms up in a trie symbol by symbol: the TF-IDF featurizer
(:mod:`triage_core.linear_kernels`: word and character n-grams) and the WordPiece tokenizer
(:mod:`triage_core.wordpiece`: the longest vocabulary piece at each point of a word). Both build
a :class:`Trie` of their terms here and call :func:`transition` from their loops.

State 0 is dead (no term starts this way), 1 the empty prefix. The transitions are an
open-addressing hash table (:func:`hash_slots`): a step reads one 16-byte slot, which holds the
child state and the value of the term ending there. Why not a dense table (states x symbols): 6 MB
for the character n-grams of Banking77 against 1 MB here (the same speed alone), and in the
server the kernels share the caches with ONNX Runtime.

Imported only where a kernel runs (not by the Lambdas, whose packages have no numba).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / the golden ratio: Fibonacci hashing
_EMPTY = -1


def hash_slots(keys: np.ndarray, children: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, int]:
    """A trie's transitions as an open-addressing hash table (linear probing, at most half
    full): ``slots[h] = (key, child << 32 | end + 1)`` for the transition ``key = state * base +
    code`` to ``child``, where ``end`` is the value of the term ending at ``child`` or -1; empty
    slots have key -1. A key goes to slot ``(key * golden) >> shift`` (the top bits), or the next
    free one. Returns ``(slots, shift)``."""
    size = 1 << max(1, (2 * len(keys) - 1).bit_length())
    if len(keys) and (children.max() >= 1 << 31 or ends.max() >= (1 << 32) - 1):
        raise ValueError("more than 2**31 trie states or 2**32 term values")
    slots = np.full((size, 2), _EMPTY, np.int64)
    shift = 64 - (size.bit_length() - 1)
    _fill(slots, keys, (children << 32) | (ends + 1), shift)
    return slots, shift


@njit(cache=True)
def _fill(slots, keys, values, shift) -> None:
    mask = len(slots) - 1
    for i in range(len(keys)):
        h = np.int64((np.uint64(keys[i]) * _GOLDEN) >> np.uint64(shift))
        while slots[h, 0] != _EMPTY:
            h = (h + 1) & mask
        slots[h, 0] = keys[i]
        slots[h, 1] = values[i]


@njit
def transition(trie, state: int, code: int) -> int:
    """The transition from ``state`` by ``code``: ``child << 32 | end + 1`` (0: none; ``end``: the
    value of the term ending at ``child``, or -1)."""
    slots, base, shift = trie
    key = state * base + code
    mask = len(slots) - 1
    h = np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(shift))
    while True:
        found = slots[h, 0]
        if found == key:
            return slots[h, 1]
        if found == _EMPTY:
            return 0
        h = (h + 1) & mask


class Trie:
    """``terms`` (sequences of codes in ``[0, base)``) as a trie; the term ``terms[i]`` ends with
    the value ``values[i]`` (default ``i``). ``arrays``: what the kernels take, ``(slots, base,
    shift)`` (numba takes a tuple of arrays and scalars, not an object)."""

    def __init__(self, terms: Sequence[Sequence[int]], base: int, values: Sequence[int] | None = None):
        states: dict[tuple[int, ...], int] = {(): 1}
        edges: dict[int, int] = {}  # state * base + code -> child
        value: dict[int, int] = {}  # state -> the value of the term ending there
        for index, term in enumerate(terms):
            prefix: tuple[int, ...] = ()
            state = 1
            for code in term:
                prefix += (code,)
                child = states.setdefault(prefix, len(states) + 1)
                edges[state * base + code] = child
                state = child
            value[state] = index if values is None else values[index]
        keys = np.fromiter(edges.keys(), np.int64, len(edges))
        children = np.fromiter(edges.values(), np.int64, len(edges))
        ends = np.fromiter((value.get(child, -1) for child in edges.values()), np.int64, len(edges))
        self.slots, self.shift = hash_slots(keys, children, ends)
        self.arrays = (self.slots, base, self.shift)
