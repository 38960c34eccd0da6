"""The handlers' clock: a virtual clock that runs ``speed`` times faster than the wall clock.

Everything the three functions measure in time (job deadlines, the finalization lease, their
own Lambda timeout and the dispatcher's run budget) is read from this clock, so a deadline of
100 virtual seconds passes in 5 wall-clock seconds at speed 20, and every duration keeps its
proportion to the others. What does not run on it (HTTP calls, botocore's retry back-off, the
model, the endpoint stand-in, SQS) takes wall-clock time, which the functions see ``speed``
times longer: the chaos stack is like a machine ``speed`` times slower than the configuration
assumes, so timeouts and deadlines are reached for real.
"""

from __future__ import annotations

import time


class VirtualClock:
    def __init__(self, speed: float = 1.0):
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._wall0 = time.time()

    def __call__(self) -> float:
        """Epoch seconds, virtual: equal to the wall clock when created, then ``speed`` x faster."""
        now = time.time()
        return self._wall0 + (now - self._wall0) * self.speed

    def wall_seconds(self, virtual_seconds: float) -> float:
        """How long ``virtual_seconds`` take on the wall clock."""
        return virtual_seconds / self.speed
