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
import io
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Annotations, CfnRule, CfnRuleAssertion, Fn, IgnoreMode
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

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
    asset: s3_assets.Asset | None
    placeholder: bool

    def grant_read(self, grantee: iam.IGrantable) -> None:
        if self.asset is not None:
            self.asset.grant_read(grantee)
        else:
            self.bucket.grant_read(grantee, self.object_key)


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
        asset = s3_assets.Asset(self, "Asset", path=str(path))
        self.artifact = ModelArtifact(
            asset.s3_object_url, asset.bucket, asset.s3_object_key, asset, placeholder=placeholder
        )


def container_image(scope: Construct, construct_id: str, *, repo_root: Path) -> ecr_assets.DockerImageAsset:
    """The serving image, built from ``container/Dockerfile`` with the repo root as context."""
    return ecr_assets.DockerImageAsset(
        scope,
        construct_id,
        directory=str(repo_root),
        file=DOCKERFILE,
        platform=ecr_assets.Platform.LINUX_AMD64,
        ignore_mode=IgnoreMode.DOCKER,
        exclude=IMAGE_CONTEXT_EXCLUDE + IMAGE_CONTEXT_NOISE,
    )
