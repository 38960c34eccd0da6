"""The review threshold: chosen on the validation split by the recipe's policy, written into the
artifact's manifest. ``make train`` (training.pipeline) and ``make cascade`` (training.cascade,
after a new bar changes the served scores) both use it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from training.recipe import ReviewPolicy

log = logging.getLogger("training")


def choose_review_threshold(artifact_dir: Path, validation, policy: ReviewPolicy) -> dict[str, Any]:
    """The review threshold, chosen on the validation split by the recipe's policy
    (:func:`training.evaluate.review_threshold`: the target accuracy of the auto-accepted
    tickets, within the ceiling on the share sent to review), with the validation split's
    coverage/accuracy curve. The test split only reports how that threshold does."""
    from training.evaluate import coverage_curve, review_threshold

    top, correct = top_scores_and_correct(artifact_dir, validation)
    choice = review_threshold(top, correct, policy.target_accuracy, policy.max_review_share)
    log.info(
        "review threshold %.3f (validation: auto-accepted accuracy %.4f, %.1f%% sent to review; %s)",
        choice["threshold"],
        choice["accepted_accuracy"],
        100 * choice["review_share"],
        choice["rule"].split(":")[0],
    )
    for warning in choice["warnings"]:
        log.warning("review threshold: %s", warning)
    return {**choice, "chosen_on": "validation", "validation_curve": coverage_curve(top, correct)}


def top_scores_and_correct(artifact_dir: Path, data) -> tuple[np.ndarray, np.ndarray]:
    """The served artifact's top score per ticket, and whether its top label is right."""
    from triage_core.inference import ArtifactClassifier

    classifier = ArtifactClassifier(artifact_dir)
    scores = classifier.predict_scores(data.texts)
    index = {label: i for i, label in enumerate(classifier.labels)}
    return scores.max(axis=1), scores.argmax(axis=1) == np.array([index[y] for y in data.labels])


def store_review_threshold(artifact_dir: Path, review: dict[str, Any]) -> None:
    """Write the chosen threshold, and the policy it was chosen by, into the artifact's manifest:
    the server uses the threshold unless TRIAGE_REVIEW_THRESHOLD is set (the stack sets it only
    when ``triage:reviewThreshold`` is)."""
    from triage_core.artifact import edited_manifest

    with edited_manifest(artifact_dir) as manifest:
        manifest["review_threshold"] = review["threshold"]
        manifest["review_target_accuracy"] = review["target_accuracy"]
        manifest["review_max_share"] = review["max_review_share"]
