"""The drift reference on its way from training to the aggregator: training's ``model.tar.gz``
(``training.export.pack_model_tar``) -> the manifest the stack reads at synth time -> the
``TRAINING_MIX`` variable the aggregator's settings parse, within Lambda's 4 KB."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from infra.lambdas import ENVIRONMENT_BYTES, check_environment_size, training_mix_json
from infra.model import archive_manifest, placeholder_tarball

REPO = Path(__file__).resolve().parents[2]


def test_the_stack_reads_the_training_mix_from_trainings_model_tarball(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    from ticket_pipeline.settings import AggregatorSettings
    from training.export import pack_model_tar
    from triage_core.artifact import load_manifest, store_training_mix

    model = tmp_path / "model"
    shutil.copytree(tiny_artifact, model)
    labels = load_manifest(model).labels
    store_training_mix(model, [labels[0], labels[0], labels[-1]])
    tarball = pack_model_tar(model, tmp_path / "model.tar.gz")

    value = training_mix_json(archive_manifest(tarball))
    assert value is not None
    settings = AggregatorSettings.from_env(
        {
            "JOBS_TABLE": "jobs",
            "OUTPUT_BUCKET": "out-bucket",
            "RESULTS_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:results",
            "TRAINING_MIX": value,
        }
    )
    assert settings.training_mix == {
        label: (2 if i == 0 else 1 if i == len(labels) - 1 else 0) for i, label in enumerate(labels)
    }
    (tmp_path / "placeholder").mkdir()
    assert archive_manifest(placeholder_tarball(tmp_path / "placeholder")) is None  # no manifest, no drift


def test_banking77s_training_mix_fits_lambdas_4_kb_with_the_aggregators_other_variables() -> None:
    """AWS Lambda Developer Guide, Lambda quotas: "The total size of all environment variables
    doesn't exceed 4 KB". The 77 categories of the bundled data, counted as training counts
    them, with the aggregator's other variables at realistic lengths."""
    with open(REPO / "data/banking77/train.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    column = "category" if "category" in rows[0] else "label"
    labels = sorted({row[column] for row in rows})
    assert len(labels) == 77
    mix = training_mix_json(
        {"training_mix": {label: sum(r[column] == label for r in rows) for label in labels}}
    )
    arn = "arn:aws:sns:eu-west-1:123456789012:TicketTriage-NotificationsResults1234ABCD-0123456789AB"
    environment = {
        "JOBS_TABLE": "TicketTriage-JobStateJobs1234ABCD-0123456789ABC",
        "OUTPUT_BUCKET": "tickettriage-storageoutputbucket1234abcd-0123456789ab",
        "RESULTS_PREFIX": "results/",
        "RESULTS_TOPIC_ARN": arn,
        "FINALIZE_LEASE_SECONDS": "960",
        "POWERTOOLS_METRICS_NAMESPACE": "TicketTriage",
        "LOG_LEVEL": "INFO",
        "FUNCTION_TIMEOUT_SECONDS": "900",
        "POWERTOOLS_SERVICE_NAME": "ticket-aggregator",
        "REVIEW_TOPIC_ARN": arn.replace("Results", "Review"),
        "REVIEW_PREFIX": "review/",
        "OUT_OF_SCOPE_BELOW": "0.2",
        "DRIFT_MIN_TICKETS": "500",
        "TRAINING_MIX": mix,
    }
    check_environment_size("aggregator", environment)  # does not raise
    size = sum(len(k) + len(v.encode()) for k, v in environment.items())
    assert size < ENVIRONMENT_BYTES
    twice = {
        **environment,
        "TRAINING_MIX": json.dumps({f"{k}_x{i}": 1 for i in range(2) for k in json.loads(mix)}),
    }
    with pytest.raises(ValueError, match="over Lambda's 4 KB"):
        check_environment_size("aggregator", twice)
