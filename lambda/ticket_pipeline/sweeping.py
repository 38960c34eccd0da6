"""Sweeper logic: every open job past its deadline is finalized ``partial``, once.

A job's deadline is its last ``InvokeEndpointAsync`` plus the request TTL, the invocation
timeout and a margin (:attr:`.settings.DispatcherSettings.job_deadline_seconds`): by then every
notification SageMaker will ever send has arrived, unless it was lost (the aggregator's event
in its dead-letter queue, SageMaker failing to publish, a request expiring without notice). The
sweeper takes such a job with :meth:`.jobs.JobStore.claim_overdue` (the same lease as every
other finalizer, so it cannot race a last notification into two results messages), writes the
tickets of the chunks that never reported to the failures with the reason, and publishes the one
results message. A job whose dispatch never finished (its dispatcher event in the dead-letter
queue) gets its file read again, so the records no run sent go to the failures too. Notifications
arriving afterwards are late: counted and ignored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ticket_pipeline.intake import file_keys
from ticket_pipeline.logs import child_logger
from ticket_pipeline.results import finalize_for
from ticket_pipeline.settings import SweeperSettings
from ticket_pipeline.stores import Stores

logger = child_logger()


Deps = Stores  # objects, jobs, publisher, metrics


@dataclass
class SweepReport:
    overdue: list[str] = field(default_factory=list)  # overdue job ids found
    finalized: dict[str, str] = field(default_factory=dict)  # job id -> status published
    skipped: list[str] = field(default_factory=list)  # someone else held or finished them

    def as_dict(self) -> dict[str, Any]:
        return {"overdue": len(self.overdue), "finalized": self.finalized, "skipped": self.skipped}


def sweep(
    deps: Deps,
    settings: SweeperSettings,
    clock: Callable[[], float] = time.time,
    time_left: Callable[[], float] = lambda: math.inf,
) -> SweepReport:
    """Finalize the overdue jobs (at most ``MAX_JOBS_PER_SWEEP``, earliest deadline first) while
    there is time left for one more finalization."""
    report = SweepReport(overdue=deps.jobs.overdue_jobs(clock(), settings.max_jobs_per_sweep))
    for job_id in report.overdue:
        if time_left() < settings.function_timeout_seconds / 2:
            logger.warning("sweep out of time; the next one continues", extra={"left": len(report.overdue)})
            break
        final = finalize_for(
            job_id,
            deps,
            settings,
            clock,
            overdue=True,
            time_left=time_left,
            file_keys=lambda meta: file_keys(deps, meta),  # a job whose dispatch never finished
        )
        if final is None:
            report.skipped.append(job_id)
            continue
        report.finalized[job_id] = final.status
        logger.warning(
            "overdue job finalized",
            extra={"job_id": job_id, "status": final.status, "failed": final.message["failed"]},
        )
    deps.metrics.count("OverdueJobs", len(report.finalized))
    return report
