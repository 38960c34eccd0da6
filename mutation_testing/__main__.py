"""``make mutation``: mutmut 3 on the exactly-once core, one JSON line of scores at the end.

mutmut copies the sources into ``mutants/``, rewrites every function of the modules to mutate
into a trampoline that calls the original or one of its mutants (chosen by an environment
variable), runs the selected tests once to learn which tests reach which function, then runs,
for each mutant, only the tests that reach its function, in forked workers.

It names a mutant after the source file's path, and a trampoline only switches to its mutants
when that name is the module's import name; ``lambda/ticket_pipeline/jobs.py`` is imported as
``ticket_pipeline.jobs`` (``lambda`` is not even a valid package name). So mutmut runs in a
staging folder, ``artifacts/mutation/`` (ignored by git and ruff), where the packages sit under
their import names: symlinks ``triage_core``, ``ticket_pipeline``, ``local_pipeline``, ``tests``
to the real folders (mutmut copies them into ``artifacts/mutation/mutants/``; nothing is ever
written into the real ones), and a ``pyproject.toml`` with mutmut's settings and pytest's, its
``pythonpath`` being the staging copy instead of the repository.

Usage: ``python -m mutation_testing [--module PATH ...] [--max-children N]`` (default: every
module of :data:`MODULES`, as many workers as cores). Each run starts from a fresh ``mutants/``:
mutmut's cache would keep a mutant's old verdict after the tests changed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from local_pipeline.aws import DUMMY_CREDENTIALS, MotoServer, patched_environ
from mutation_testing.report import (
    Change,
    build_report,
    change_from_diff,
    function_of,
    load_equivalents,
    status,
)
from mutation_testing.report import read_results as read_meta

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "artifacts" / "mutation"
EQUIVALENTS = Path(__file__).with_name("equivalent_mutants.toml")
SHARED_MOTO = "TRIAGE_TEST_MOTO_URL"  # tests/pipeline/conftest.py uses this server instead of its own

# Module to mutate -> where it sits in the staging folder (its import path), and the fast tests
# that reach it (plain functions, moto's server with a table or stack of its own per test). The
# pipeline tests that run the real inference server or the whole local stack reach these modules
# too but take seconds each; what they check end to end is pinned here at the level where it
# lives, so the selection stays within the 45-minute bound on 2 cores.
#
# Reading tickets (issue #11 split the reader): records.py (what a record is, field maps,
# per-record errors, the shape check), formats.py (JSON Lines, CSV, JSON elements to records:
# blank lines, broken rows, bare strings) and reader.py (format detection, decoding -> lines ->
# records) decide which bytes become which records; textstream.py (bytes -> text: gzip, BOMs,
# charsets checked against the bytes, binary refused) and jsonstream.py (the bounded JSON array
# reader) are mutated too since issue #21. All five run the reader's tests, the JSON reader's and
# the regression cases of the reader's property tests (issue #21 pinned the joined-file paths of
# formats.py and records.py there: several values on a line, a second header).
# Job state: jobs.py (DynamoDB items, conditions, leases) and aggregation.py (one notification ->
# recorded once -> maybe finalize); results.py (finalizing a job: results files, the message)
# and sweeping.py (overdue jobs) since issue #21, with the fast tests of deadlines and of the
# chaos findings that drive them through moto's server.
READER_TESTS = [
    "tests/core/test_ticket_reader.py",
    "tests/core/test_reader_edges.py",
    "tests/pipeline/test_pipeline_units.py",
]
# The reader's property tests' regression cases (issue #21); the Hypothesis properties themselves
# take ~10 s a run, too long to repeat for each of several hundred mutants.
PROPERTY_CASES = "tests/core/test_reader_properties.py"
STREAM_TESTS = [
    *READER_TESTS,
    "tests/core/test_jsonstream.py",
    f"{PROPERTY_CASES}::test_issue_21_regressions",
    f"{PROPERTY_CASES}::test_utf8_json_lines_labelled_utf16_is_read_by_its_bytes",
    f"{PROPERTY_CASES}::test_a_truncated_gzip_says_where_reading_stopped",
]
FINALIZE_TESTS = [
    "tests/pipeline/test_aggregation_units.py",
    "tests/pipeline/test_pipeline_units.py",
    "tests/pipeline/test_pipeline_deadlines.py",
    "tests/pipeline/test_pipeline_chaos_findings.py",
]
MODULES = {
    "triage_core/records.py": ("triage_core/records.py", STREAM_TESTS),
    "triage_core/formats.py": ("triage_core/formats.py", STREAM_TESTS),
    "triage_core/reader.py": ("triage_core/reader.py", STREAM_TESTS),
    "triage_core/textstream.py": ("triage_core/textstream.py", STREAM_TESTS),
    "triage_core/jsonstream.py": ("triage_core/jsonstream.py", STREAM_TESTS),
    "lambda/ticket_pipeline/jobs.py": (
        "ticket_pipeline/jobs.py",
        ["tests/pipeline/test_jobs_store.py", "tests/pipeline/test_pipeline_units.py"],
    ),
    "lambda/ticket_pipeline/aggregation.py": (
        "ticket_pipeline/aggregation.py",
        ["tests/pipeline/test_aggregation_units.py"],
    ),
    "lambda/ticket_pipeline/results.py": ("ticket_pipeline/results.py", FINALIZE_TESTS),
    "lambda/ticket_pipeline/sweeping.py": (
        "ticket_pipeline/sweeping.py",
        ["tests/pipeline/test_pipeline_deadlines.py", "tests/pipeline/test_pipeline_chaos_findings.py"],
    ),
}

LINKS = {
    "triage_core": REPO / "triage_core",
    "ticket_pipeline": REPO / "lambda" / "ticket_pipeline",
    "local_pipeline": REPO / "local_pipeline",
    "tests": REPO / "tests",
    "chaos": REPO / "chaos",  # chaos/generated.py: the files of the reader's property tests
    # The pipeline tests' ``iam_calls`` fixture replays what the code called against the
    # synthesized template (tests/synth_fixture.py): the CDK app, its context and the asset
    # folders it stages (the Lambda code and the container as they are, never imported here).
    "infra": REPO / "infra",
    "cdk.json": REPO / "cdk.json",
    "lambda": REPO / "lambda",
    "container": REPO / "container",
}
COPIED = ["local_pipeline", "chaos", "infra", "cdk.json", "lambda", "container"]

GOALS = {"module": 0.90, "overall": 0.92}


def _toml(value: object) -> str:
    return json.dumps(value)  # strings and lists of strings: JSON and TOML agree


def workdir(module: str) -> Path:
    """The staging folder of one module's run (``artifacts/mutation/<module stem>/``)."""
    return WORK / Path(module).stem


def stage(module: str) -> Path:
    """Lay out the staging folder for a fresh run of mutmut on ``module``."""
    work = workdir(module)
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "mutants", ignore_errors=True)
    for name, target in LINKS.items():
        link = work / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(target, work), target_is_directory=target.is_dir())
    staged, tests = MODULES[module]
    mutmut = {
        "source_paths": sorted({staged_path.split("/")[0] for staged_path, _ in MODULES.values()}),
        "only_mutate": [staged],
        "also_copy": COPIED,
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-p", "no:randomly", "-m", "not slow"],
    }
    lines = ["# Written by `python -m mutation_testing` for one run; see mutation_testing/__main__.py", ""]
    lines.append("[tool.mutmut]")
    lines += [f"{key} = {_toml(value)}" for key, value in mutmut.items()]
    # mutmut's wall-clock limit per mutant is (estimated time + 1 s) x multiplier (default 15): on
    # a machine shared with other jobs a clean test run can take 10x its estimate, and a mutant
    # that only ran slowly would count as a timeout. 40 keeps real hangs bounded (minutes).
    lines += ["use_git_change_detection = false", "debug = false", "timeout_multiplier = 40.0", ""]
    lines.append("[tool.pytest.ini_options]")
    lines.append('pythonpath = ["."]')
    lines.append('addopts = "-ra --strict-markers"')
    lines.append('markers = ["slow: trains or runs the real model (minutes, not seconds)"]')
    (work / "pyproject.toml").write_text("\n".join(lines) + "\n", "utf-8")
    return work


def run_mutmut(work: Path, max_children: int, log: Path, env: dict[str, str]) -> int:
    mutmut = Path(sys.executable).with_name("mutmut")
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.run(
            [str(mutmut), "run", "--max-children", str(max_children)],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return proc.returncode


def mutant_changes(module: str, codes: dict[str, int | None]) -> dict[str, Change]:
    """The change of every mutant of ``module`` that was not killed (mutmut's own diff of it)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    staged = MODULES[module][0]
    changes = {}
    cwd = os.getcwd()
    os.chdir(workdir(module))
    try:
        for mutant, code in codes.items():
            if status(code) in ("killed", "not_checked"):
                continue
            diff = get_diff_for_mutant(mutant, path=staged)
            changes[mutant] = change_from_diff(module, function_of(mutant), diff)
    finally:
        os.chdir(cwd)
    return changes


def forget_undetected(module: str) -> int:
    """Clear the verdict of every mutant of the last run that was not killed, so that the next
    ``mutmut run`` in the module's staging folder tests only those again (with the tests as
    they are now). Sound while tests are only added: a killed mutant stays killed."""
    meta_path = workdir(module) / "mutants" / f"{MODULES[module][0]}.meta"
    meta = json.loads(meta_path.read_text("utf-8"))
    codes = meta["exit_code_by_key"]
    cleared = [name for name, code in codes.items() if status(code) != "killed"]
    for name in cleared:
        codes[name] = None
    meta_path.write_text(json.dumps(meta), "utf-8")
    return len(cleared)


def run_all(modules: list[str], max_children: int, retry: bool = False) -> int:
    """mutmut on each module in turn, fresh each time (mutmut's cache would keep a mutant's old
    verdict after the tests changed); with ``retry``, only the last run's undetected mutants."""
    # One moto server for every test process of the run (each mutant's tests run in a fresh
    # pytest session; starting a server per mutant would cost more than its tests). The selected
    # tests create resources of their own and never reset it (tests/pipeline/conftest.py).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the staged copy
    with patched_environ(DUMMY_CREDENTIALS):
        server = MotoServer().start()
    try:
        env.update({**DUMMY_CREDENTIALS, SHARED_MOTO: server.url})
        for module in modules:
            if retry:
                work = workdir(module)
                print(f"{module}: {forget_undetected(module)} undetected mutants to test again", flush=True)
            else:
                work = stage(module)
            log = work / "mutmut.log"
            began = time.monotonic()
            print(f"mutmut on {module}, {max_children} worker(s); its output: {log}", flush=True)
            code = run_mutmut(work, max_children, log, env)
            if code != 0:
                print(log.read_text("utf-8", "replace")[-4000:])
                print(f"mutmut failed on {module} (exit {code}); its log: {log}")
                return code
            print(f"  done in {(time.monotonic() - began) / 60:.1f} min", flush=True)
    finally:
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mutation_testing", description=__doc__.split("\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(MODULES), help="only these (repeatable)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--report-only", action="store_true", help="the report of the last runs, no new run")
    parser.add_argument(
        "--retry-undetected",
        action="store_true",
        help="test again only the mutants the last run did not kill (after adding tests)",
    )
    args = parser.parse_args(argv)
    modules = args.module or list(MODULES)

    start = time.monotonic()
    if not args.report_only:
        code = run_all(modules, args.max_children, retry=args.retry_undetected)
        if code != 0:
            return code
    results: dict[str, dict[str, int | None]] = {}
    changes: dict[str, Change] = {}
    for module in modules:
        results.update(read_meta(workdir(module) / "mutants", {MODULES[module][0]: module}))
        changes.update(mutant_changes(module, results[module]))
    report = build_report(results, changes, load_equivalents(EQUIVALENTS))
    elapsed = time.monotonic() - start

    details = WORK / "undetected.txt"
    with details.open("w", encoding="utf-8") as out:
        for mutant, state, change in report.undetected:
            out.write(f"{mutant} [{state}]\n{change.describe()}\n\n")
    for mutant, state, change in report.undetected:
        print(f"{state}: {mutant}\n{change.describe()}")
    for entry, why in report.stale:
        print(f"stale entry in {EQUIVALENTS.name}: {entry.module} {entry.function} {entry.removed}: {why}")
    print(f"\n{'module':40} mutants killed surv. t/out no-t. unchecked equiv. score")
    for module, score in report.modules.items():
        flag = "" if score.score >= GOALS["module"] else f"  (goal {GOALS['module']})"
        print(
            f"{module:40} {score.mutants:7} {score.killed:6} {score.survived:5} {score.timeout:6} "
            f"{score.no_tests:6} {score.not_checked:9} {score.equivalent:6} {score.score:.3f}{flag}"
        )
    print(f"overall {report.score:.3f} (goal {GOALS['overall']}); {elapsed / 60:.1f} min; details: {details}")
    summary = report.summary()
    (WORK / "report.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
