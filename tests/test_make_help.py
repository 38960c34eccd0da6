"""`make help` is the newcomer's index of the Makefile: every phony target has its line, read from
the `## ` comment right above the target (issue #14)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def phony_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    names: list[str] = []
    for line in re.findall(r"^\.PHONY:(.*)$", text, flags=re.MULTILINE):
        names += line.split()
    return names


def test_make_help_lists_every_phony_target_with_its_comment() -> None:
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    listed = {}
    for line in out.stdout.splitlines():
        match = re.match(r"\s+make (\S+)\s+(.+)$", line)
        assert match, f"not a help line: {line!r}"
        listed[match[1]] = match[2]
    targets = phony_targets()
    assert {"demo", "test", "help"} <= set(targets)
    assert sorted(listed) == sorted(targets), "every .PHONY target needs a `## ` line right above it"
    makefile = (ROOT / "Makefile").read_text()
    for name, doc in listed.items():  # the text is the comment's, verbatim
        assert f"## {doc}\n{name}:" in makefile
