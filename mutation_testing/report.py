"""From mutmut's per-file results to the scores ``make mutation`` prints.

mutmut 3 keeps one ``mutants/<source path>.meta`` JSON file per mutated source, mapping each
mutant (``<module>.<mangled function>__mutmut_<n>``) to the exit code of its test run. Its status
names come from ``mutmut.stats.status_by_exit_code``; the ones counted here:

* ``killed``: a test failed with the mutant in place;
* ``survived``: every test that reaches the mutated function passed;
* ``timeout``: the tests ran out of their CPU-time limit;
* ``no_tests``: no selected test reaches the function;
* ``not_checked``: the run ended before testing it (no verdict);
* anything else (``suspicious``, ``segfault``) is neither killed nor equivalent.

An *equivalent* mutant behaves exactly like the original for every input the code can get (a
condition that cannot change the outcome, a keyword compared case-insensitively...). They are
listed by hand in ``equivalent_mutants.toml``, each with its reason, and matched on what the
mutant changes (module, function, the line before and after), not on mutmut's number for it,
which shifts whenever the function changes. An entry matches only a mutant that no test kills:
an entry matching a killed mutant, or none at all, is stale and reported, so the list cannot
quietly hide a gap that a later change opened.

``score = killed / (mutants - equivalent)`` per module and over all modules.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# mutmut.stats.status_by_exit_code, the part that decides a mutant's fate (mutmut 3.8.1)
KILLED_CODES = frozenset({1, 3})
SURVIVED_CODES = frozenset({0})
TIMEOUT_CODES = frozenset({36, -24, 24, 152, 255})
NO_TESTS_CODES = frozenset({5, 33})


def status(exit_code: int | None) -> str:
    if exit_code is None:
        return "not_checked"  # the run stopped before this mutant (counted as not killed)
    if exit_code in KILLED_CODES:
        return "killed"
    if exit_code in SURVIVED_CODES:
        return "survived"
    if exit_code in TIMEOUT_CODES:
        return "timeout"
    if exit_code in NO_TESTS_CODES:
        return "no_tests"
    return "other"


@dataclass(frozen=True)
class Change:
    """What one mutant changes: the lines of the function it removes and adds (stripped)."""

    module: str  # source path as the project has it, e.g. "lambda/ticket_pipeline/jobs.py"
    function: str  # "check_shape" or "JobStore.create_job"
    removed: tuple[str, ...]
    added: tuple[str, ...]

    def describe(self) -> str:
        lines = [f"{self.module} {self.function}"]
        lines += [f"  - {line}" for line in self.removed]
        lines += [f"  + {line}" for line in self.added]
        return "\n".join(lines)


def change_from_diff(module: str, function: str, diff: str) -> Change:
    """A :class:`Change` from mutmut's unified diff of a mutant (``mutmut show``)."""
    removed, added = [], []
    for line in diff.splitlines():
        if line.startswith(("---", "+++", "@@")):
            continue
        if line.startswith("-"):
            removed.append(line[1:].strip())
        elif line.startswith("+"):
            added.append(line[1:].strip())
    return Change(module, function, tuple(removed), tuple(added))


def function_of(mutant: str) -> str:
    """``triage_core.records.x_make_record__mutmut_3`` -> ``make_record``;
    ``ticket_pipeline.jobs.xǁJobStoreǁcreate_job__mutmut_7`` -> ``JobStore.create_job``."""
    mangled = mutant.partition("__mutmut_")[0].rpartition(".")[2]
    if mangled.startswith("xǁ"):
        _, cls, name = mangled.split("ǁ")
        return f"{cls}.{name}"
    return mangled.removeprefix("x_")


@dataclass(frozen=True)
class Equivalent:
    module: str
    function: str
    removed: tuple[str, ...]
    added: tuple[str, ...]
    reason: str

    def matches(self, change: Change) -> bool:
        return (self.module, self.function, self.removed, self.added) == (
            change.module,
            change.function,
            change.removed,
            change.added,
        )


def _lines(value: str | list[str]) -> tuple[str, ...]:
    return tuple(line.strip() for line in ([value] if isinstance(value, str) else value))


def load_equivalents(path: Path) -> list[Equivalent]:
    """The checked-in list: ``[[equivalent]]`` tables with module, function, from, to, reason."""
    data = tomllib.loads(path.read_text("utf-8"))
    entries = []
    for i, entry in enumerate(data.get("equivalent", [])):
        missing = {"module", "function", "from", "to", "reason"} - set(entry)
        if missing or not str(entry.get("reason", "")).strip():
            raise ValueError(f"{path} entry {i + 1}: needs module, function, from, to and a reason")
        entries.append(
            Equivalent(
                entry["module"],
                entry["function"],
                _lines(entry["from"]),
                _lines(entry["to"]),
                entry["reason"],
            )
        )
    return entries


@dataclass
class ModuleScore:
    mutants: int = 0
    killed: int = 0
    survived: int = 0
    timeout: int = 0
    no_tests: int = 0
    not_checked: int = 0
    other: int = 0
    equivalent: int = 0

    @property
    def score(self) -> float:
        scored = self.mutants - self.equivalent
        return round(self.killed / scored, 4) if scored else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mutants": self.mutants,
            "killed": self.killed,
            "survived": self.survived,
            "timeout": self.timeout,
            "no_tests": self.no_tests,
            "not_checked": self.not_checked,
            "equivalent": self.equivalent,
            "score": self.score,
        }


@dataclass
class Report:
    modules: dict[str, ModuleScore]
    undetected: list[tuple[str, str, Change]]  # (mutant, status, change) not killed, not equivalent
    equivalent: list[tuple[str, Equivalent]]
    stale: list[tuple[Equivalent, str]]  # (entry, why it is stale)

    @property
    def score(self) -> float:
        total = sum(m.mutants - m.equivalent for m in self.modules.values())
        killed = sum(m.killed for m in self.modules.values())
        return round(killed / total, 4) if total else 1.0

    def summary(self) -> dict[str, Any]:
        return {"modules": {k: v.as_dict() for k, v in self.modules.items()}, "score": self.score}


def build_report(
    results: Mapping[str, Mapping[str, int | None]],
    changes: Mapping[str, Change],
    equivalents: Iterable[Equivalent],
) -> Report:
    """``results``: module path -> mutant -> exit code; ``changes``: mutant -> its change (needed
    for every mutant that was not killed)."""
    equivalents = list(equivalents)
    used: dict[int, list[str]] = {i: [] for i in range(len(equivalents))}
    killed_matches: dict[int, list[str]] = {i: [] for i in range(len(equivalents))}
    modules: dict[str, ModuleScore] = {}
    undetected: list[tuple[str, str, Change]] = []
    matched: list[tuple[str, Equivalent]] = []
    for module, codes in results.items():
        score = modules.setdefault(module, ModuleScore())
        for mutant, code in sorted(codes.items()):
            score.mutants += 1
            state = status(code)
            setattr(score, state, getattr(score, state) + 1)
            change = changes.get(mutant)
            hits = [i for i, e in enumerate(equivalents) if change is not None and e.matches(change)]
            if state == "not_checked":
                continue  # no verdict: neither killed nor a gap known yet
            if state == "killed":
                for i in hits:
                    killed_matches[i].append(mutant)
                continue
            if hits:
                score.equivalent += 1
                used[hits[0]].append(mutant)
                matched.append((mutant, equivalents[hits[0]]))
            else:
                undetected.append((mutant, state, change or Change(module, function_of(mutant), (), ())))
    stale = []
    for i, entry in enumerate(equivalents):
        if killed_matches[i]:
            stale.append((entry, f"a test kills it ({', '.join(killed_matches[i])}): not equivalent"))
        elif not used[i] and entry.module in results:
            stale.append((entry, "matches no mutant of this run"))
    return Report(modules, undetected, matched, stale)


def read_results(mutants_dir: Path, staged_to_module: Mapping[str, str]) -> dict[str, dict[str, int | None]]:
    """module path -> mutant -> exit code, from mutmut's ``.meta`` files."""
    results = {}
    for staged, module in staged_to_module.items():
        meta = json.loads((mutants_dir / f"{staged}.meta").read_text("utf-8"))
        results[module] = dict(meta["exit_code_by_key"])
    return results
