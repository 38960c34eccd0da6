"""The CDK app (Python): the ticket-triage async inference stack and its constructs.

Entry point ``app.py`` -> ``infra.application.build_app``; settings in ``infra.config``.
"""
