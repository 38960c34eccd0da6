"""What the endpoint runs: the container image and the model artifact, both as CDK assets.

Neither needs Docker nor AWS at synth time: ``DockerImageAsset`` only fingerprints and stages
its build context (the image is built by ``cdk deploy``), and the model artifact is either a
local ``model.tar.gz`` (an S3 asset, uploaded by ``cdk deploy``) or an existing S3 object.

A fresh clone has no trained model. Then the app stages a tiny *placeholder* ``model.tar.gz``
(so ``make synth`` and the tests work offline), adds a warning to the synth output and a
CloudFormation rule that makes ``cdk deploy`` fail before anything is created. Train and
package a model (``make train`` then ``python -m training package``) or pass
``-c triage:modelArtifact=s3://...`` to deploy for real.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import (
    Annotations,
    CfnRule,
    CfnRuleAssertion,
    FileAssetPackaging,
    Fn,
    IgnoreMode,
    Stack,
    Stage,
)
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import ARM64

# The image's build context is the repo root, but only these paths go into it (the same
# whitelist as the root .dockerignore). Excluding everything else also keeps synth fast:
# the asset fingerprint never walks .venv/, node_modules/, artifacts/ or cdk.out/.
IMAGE_CONTEXT_EXCLUDE = ["*", "!container", "!container/**", "!triage_core", "!triage_core/**"]
IMAGE_CONTEXT_NOISE = ["**/__pycache__", "**/*.pyc", "**/.pytest_cache", "**/tests"]
DOCKERFILE = "container/Dockerfile"

PLACEHOLDER_NOTE = (
    "placeholder written by the CDK app because no trained model.tar.gz was found; "
    "this endpoint cannot serve it.\n"
)


@dataclass(frozen=True)
class ModelArtifact:
    """Where the model lives: ``s3_url`` for ``ModelDataUrl`` and how to grant read access."""

    s3_url: str
    bucket: s3.IBucket
    object_key: str
    placeholder: bool

    def grant_read(self, grantee: iam.IGrantable) -> iam.Grant:
        """``s3:GetObject`` on the archive object itself, nothing else of its bucket (the CDK assets
        bucket holds every asset of the account: the endpoint reads only its model)."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["s3:GetObject"],
            resource_arns=[self.bucket.arn_for_objects(self.object_key)],
        )


def placeholder_tarball(directory: Path) -> Path:
    """A deterministic (byte-identical on every run) tiny model.tar.gz, so its asset hash is stable."""
    path = directory / "model.tar.gz"
    data = PLACEHOLDER_NOTE.encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("PLACEHOLDER.txt")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    partial = directory / f".model.tar.gz.{os.getpid()}"
    partial.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    partial.replace(path)  # atomic: a concurrent synth never reads half a file
    return path


class ModelArtifactSource(Construct):
    """Resolves ``triage:modelArtifact`` (local path or s3:// URI) into a ``ModelArtifact``."""

    def __init__(self, scope: Construct, construct_id: str, *, location: str, repo_root: Path) -> None:
        super().__init__(scope, construct_id)
        if location.startswith("s3://"):
            bucket_name, _, key = location[len("s3://") :].partition("/")
            bucket = s3.Bucket.from_bucket_name(self, "ExistingBucket", bucket_name)
            self.artifact = ModelArtifact(location, bucket, key, None, placeholder=False)
            self.manifest: dict | None = None  # not read at synth (no network calls)
            return

        path = Path(location)
        if not path.is_absolute():
            path = repo_root / path
        placeholder = not path.is_file()
        if placeholder:
            directory = Path(tempfile.gettempdir()) / "triage-placeholder-model"
            directory.mkdir(exist_ok=True)
            path = placeholder_tarball(directory)
            Annotations.of(self).add_warning_v2(
                "triage:placeholderModel",
                f"No model artifact at '{location}': synthesized with a placeholder model.tar.gz. "
                "`cdk deploy` will refuse this template. Run `make train` and "
                "`python -m training package`, or pass -c triage:modelArtifact=s3://<bucket>/<key>.",
            )
            # Fails the deployment at change-set creation, before any resource is touched.
            CfnRule(
                self,
                "RequireTrainedModel",
                assertions=[
                    CfnRuleAssertion(
                        assert_=Fn.condition_equals("placeholder", "trained"),
                        assert_description=(
                            "This template was synthesized without a trained model (placeholder "
                            "model.tar.gz). Package a model or set triage:modelArtifact, then synth again."
                        ),
                    )
                ],
            )
        self.manifest = None if placeholder else archive_manifest(path)
        location = model_archive_asset(self, path)
        self.artifact = ModelArtifact(
            location.s3_object_url,
            s3.Bucket.from_bucket_name(self, "AssetBucket", location.bucket_name),
            location.object_key,
            placeholder=placeholder,
        )


def model_archive_asset(scope: Construct, archive: Path):  # -> aws_cdk.FileAssetLocation
    """Stage ``archive`` (a model.tar.gz) as a file asset whose S3 object key ends in ``.tar.gz``.

    ``ModelDataUrl`` is documented as "a single gzip compressed tar archive (.tar.gz suffix)"
    (SageMaker API Reference, ContainerDefinition). ``s3_assets.Asset`` cannot give that key: the
    synthesizer names a file asset's object ``<sourceHash><extname(fileName)>``, and the extension
    of ``x.tar.gz`` is ``.gz`` (aws/aws-cdk#30257, still open for file assets). So the archive is
    registered with the stack's synthesizer directly (what ``Asset`` does underneath, no Docker,
    no custom resource) with ``.tar`` as the last part of its source hash: the key becomes
    ``<sha256>.tar.gz``. The file is staged into the cloud assembly as ``asset.<sha256>.tar.gz``,
    as ``Asset`` stages it, so ``cdk deploy`` uploads it from there."""
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    staged_name = f"asset.{digest}.tar.gz"
    outdir = Path(Stage.of(scope).asset_outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    staged = outdir / staged_name
    if not staged.is_file():
        partial = outdir / f".{staged_name}.{os.getpid()}"
        shutil.copyfile(archive, partial)
        partial.replace(staged)
    return Stack.of(scope).synthesizer.add_file_asset(
        source_hash=f"{digest}.tar", file_name=staged_name, packaging=FileAssetPackaging.FILE
    )


def container_image(
    scope: Construct, construct_id: str, *, repo_root: Path, architecture: str
) -> ecr_assets.DockerImageAsset:
    """The serving image, built from ``container/Dockerfile`` with the repo root as context, for the
    endpoint instance's architecture (``linux/arm64`` on Graviton, ``linux/amd64`` otherwise): an
    image of the other architecture fails at start ("exec format error"). The Dockerfile is
    architecture-neutral (Debian base, binary wheels that PyPI has for both)."""
    platform = ecr_assets.Platform.LINUX_ARM64 if architecture == ARM64 else ecr_assets.Platform.LINUX_AMD64
    return ecr_assets.DockerImageAsset(
        scope,
        construct_id,
        directory=str(repo_root),
        file=DOCKERFILE,
        platform=platform,
        ignore_mode=IgnoreMode.DOCKER,
        exclude=IMAGE_CONTEXT_EXCLUDE + IMAGE_CONTEXT_NOISE,
    )


def archive_manifest(archive: Path) -> dict | None:
    """The ``triage_artifact.json`` inside a local model.tar.gz (None when it holds none): what the
    stack reads from the artifact at synth time (the training mix, for the drift numbers)."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isfile() and Path(member.name).name == "triage_artifact.json":
                handle = tar.extractfile(member)
                return json.loads(handle.read()) if handle is not None else None
    return None
