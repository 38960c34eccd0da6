#!/usr/bin/env python3
"""CDK entry point (``cdk synth`` / ``cdk deploy`` run it through cdk.json's ``app``)."""

import sys

from infra.application import build_app
from infra.config import ConfigError


def main() -> None:
    try:
        app, _ = build_app()
    except ConfigError as exc:
        sys.exit(str(exc))
    app.synth()


if __name__ == "__main__":
    main()
