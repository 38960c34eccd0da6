"""The image ships ``container/inference_server`` and ``triage_core`` with the packages of
``container/requirements.txt`` and nothing else (see ``container/Dockerfile``): every import in
that code, at any depth (functions included), must be the standard library, one of those two
packages, or a distribution the image installs. A benchmark or a helper that pulls torch or the
training package into the serving package fails here, not in the deployed container."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "container" / "inference_server", ROOT / "triage_core"]
OWN = {"inference_server", "triage_core"}


def image_distributions() -> set[str]:
    names = set()
    for line in (ROOT / "container" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[=<>!~\[ ;]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_shipped_packages_import_only_what_the_image_installs() -> None:
    allowed = image_distributions()
    # The installed distributions (and their dependencies) that provide each top-level module.
    providers = packages_distributions()
    # What the image's pins pull in besides themselves (uvicorn needs click, h11; pydantic needs
    # typing-extensions...): a module of those is fine only if one of the pins declares it.
    offending = {}
    for package in SHIPPED:
        for path in sorted(package.rglob("*.py")):
            for module in imported_modules(path):
                if module in sys.stdlib_module_names or module in OWN or module == "__future__":
                    continue
                dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
                if not dists & allowed:
                    offending.setdefault(str(path.relative_to(ROOT)), set()).add(module)
    assert not offending, f"imports the image does not install: {offending}"


def test_the_check_catches_a_training_import(tmp_path: Path) -> None:
    """The checker itself: a module importing torch or the training package is reported."""
    sample = tmp_path / "bench.py"
    sample.write_text("import json\n\ndef run():\n    import torch\n    from training.batches import x\n")
    assert imported_modules(sample) - set(sys.stdlib_module_names) == {"torch", "training"}
    assert "torch" not in image_distributions() and "transformers" not in image_distributions()
