"""Where to put ``triage:outOfScopeBelow``: top scores of in-domain validation tickets against
texts that are clearly not banking tickets, both scored by a served artifact.

    python -m benchmarks.out_of_scope [--model artifacts/model] [--validation artifacts/splits/validation.csv]

Out-of-domain texts, all found on this machine without a network: the e-mails under
``tests/core/data`` (technical mailing-list replies, e-mail client samples), the one-line
``Summary`` of every installed Python distribution, and the first paragraph of the docstring of
standard-library modules. Prints, per candidate threshold, the share of validation tickets under
it (they would be marked out of scope wrongly) and the share of out-of-domain texts under it.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.metadata
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from triage_core.inference import ArtifactClassifier

REPO = Path(__file__).resolve().parent.parent
CANDIDATES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)


def out_of_domain_texts(limit_modules: int = 300) -> dict[str, list[str]]:
    emails = [
        p.read_text("utf-8", "replace")[:2000]
        for folder in ("real_client_emails", "talon/standard_replies")
        for p in sorted((REPO / "tests/core/data" / folder).iterdir())
        if p.is_file() and p.name != "README.md"
    ]
    summaries = sorted(
        {
            (d.metadata.get("Summary") or "").strip()
            for d in importlib.metadata.distributions()
            if len((d.metadata.get("Summary") or "").strip()) > 20
        }
    )
    docstrings = []
    for module in sorted(sys.stdlib_module_names):
        if module.startswith("_") or module in ("antigravity", "this", "idlelib", "tkinter", "turtle"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                doc = importlib.import_module(module).__doc__ or ""
        except Exception:
            continue
        first = doc.strip().split("\n\n")[0].strip()
        if len(first) > 30:
            docstrings.append(" ".join(first.split()))
        if len(docstrings) >= limit_modules:
            break
    return {"e-mails": emails, "package summaries": summaries, "stdlib docstrings": docstrings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "artifacts/model"))
    parser.add_argument("--validation", default=str(REPO / "artifacts/splits/validation.csv"))
    args = parser.parse_args()
    classifier = ArtifactClassifier(args.model)
    with open(args.validation, encoding="utf-8", newline="") as f:
        validation = [row["text"] for row in csv.DictReader(f)]
    groups = {"validation": validation, **out_of_domain_texts()}
    top = {name: classifier.predict_scores(texts).max(axis=1) for name, texts in groups.items()}
    ood = np.concatenate([scores for name, scores in top.items() if name != "validation"])
    report = {
        "model": args.model,
        "texts": {name: len(texts) for name, texts in groups.items()},
        "median_top_score": {name: round(float(np.median(s)), 4) for name, s in top.items()},
        "share_below": {
            str(t): {
                "validation": round(float((top["validation"] < t).mean()), 4),
                "out_of_domain": round(float((ood < t).mean()), 4),
                **{name: round(float((s < t).mean()), 4) for name, s in top.items() if name != "validation"},
            }
            for t in CANDIDATES
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
