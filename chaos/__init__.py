"""Chaos testing of the async pipeline: seeded faults at every boundary of the local stack, the
real dispatcher, aggregator, sweeper and inference server, and an independent checker.

``python -m chaos`` (``make chaos``) runs it; docs/chaos.md says what is injected,
what is checked and how to replay a seed. Modules: :mod:`.workload` (the files and their
manifests), :mod:`.faults` (the seeded plan and AWS's error shapes), :mod:`.lambda_service` and
:mod:`.delivery` (Lambda and the event sources, with their faults), :mod:`.endpoint` (the async
endpoint's failures), :mod:`.clock` (the virtual clock), :mod:`.checker`, :mod:`.harness`,
:mod:`.broken` (a deliberately broken aggregator), :mod:`.model` (the tiny model).
"""
