"""The loaded model: the shared ``ArtifactClassifier`` behind a dynamic batcher.

Preprocessing, tokenization, padding and scoring are ``triage_core`` code, the same functions
the training pipeline's evaluation runs on this artifact, so served predictions and the numbers
in ``metrics.json`` come from one code path (no training/serving skew).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from inference_server.batching import Batcher, Job
from inference_server.settings import Settings, review_threshold
from triage_core.inference import ArtifactClassifier

log = logging.getLogger(__name__)

WARM_UP_TEXTS = (
    "My card still hasn't arrived, when will it be delivered?",
    "Hi, I was charged twice for the same payment at a shop yesterday. Can you refund one? Thanks",
    "top up failed",
)


class Engine:
    """Model + batcher for one worker process."""

    def __init__(self, settings: Settings):
        started = time.perf_counter()
        self.settings = settings
        self.classifier = ArtifactClassifier(settings.model_dir, intra_op_threads=settings.intra_op_threads)
        self.labels: list[str] = list(self.classifier.labels)
        self.n_labels = len(self.labels)
        self.review_threshold, self.review_threshold_source = review_threshold(
            settings.review_threshold, self.classifier.manifest.review_threshold
        )
        self.runners = max(1, settings.threads_per_worker // settings.intra_op_threads)
        # A second session over the same model for batches that run while the other runners are
        # idle (see batching.py): an interactive ticket on an idle server gets every core.
        # Its threads sleep between runs: spinning would take the cores from the runners.
        solo = (
            self.classifier.runner(settings.solo_threads, allow_spinning=False)
            if settings.solo_threads > settings.intra_op_threads
            else None
        )
        self.batcher = Batcher(
            self.classifier.run,
            self.n_labels,
            self.runners,
            self.classifier.batch_rule(settings.batch_rule),
            solo_fn=solo,
        )
        self.load_seconds = time.perf_counter() - started

    def prepare(self, texts: Sequence[str]) -> list[Any]:
        """Preprocess and encode raw texts: one item per ticket (unpadded encodings, TF-IDF vectors
        for a linear artifact; a long ticket under ``windows`` is one item of several rows)."""
        classifier = self.classifier
        return classifier.encode(classifier.clean(list(texts)))

    def predict_blocking(self, texts: Sequence[str], timeout: float | None = None) -> np.ndarray:
        """Scores for texts through the batcher, waiting on the calling thread."""
        done = threading.Event()
        job = self.batcher.submit(self.prepare(texts), lambda _job: done.set())
        if not done.wait(timeout):
            job.cancelled = True
            raise TimeoutError("inference timed out")
        if job.error is not None:
            raise job.error
        return job.scores

    def warm_up(self) -> float:
        """Run every batch shape family once (single, small batch, bulk) before reporting ready."""
        started = time.perf_counter()
        self.predict_blocking(WARM_UP_TEXTS[:1], timeout=120)
        self.predict_blocking(list(WARM_UP_TEXTS) * 4, timeout=120)
        return time.perf_counter() - started

    def submit(self, encodings: Sequence[Any], callback, urgent: bool | None = None) -> Job:
        return self.batcher.submit(encodings, callback, urgent)

    def close(self) -> None:
        self.batcher.close()
