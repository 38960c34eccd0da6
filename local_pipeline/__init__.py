"""The async pipeline on one machine: moto's server (S3, SNS, SQS, DynamoDB), the real inference
server process, a local stand-in for the SageMaker async endpoint, and an event router that calls
the real Lambda handlers with Lambda-shaped events.

``python -m local_pipeline demo --model DIR`` runs sample files end to end;
``python -m local_pipeline up --model DIR`` keeps the stack up (writes ``local-stack.json``).
"""
