"""SageMaker training-job entry point: ``python -m training train`` with the job's arguments.

The launcher copies this file to the root of the uploaded source directory (the SDK's
``SourceCode.entry_script`` is a path inside it) next to the ``training`` and ``triage_core``
packages. The SDK's driver runs it as ``python train_entry.py --epochs 7 --learning-rate 0.0001
...`` (under ``torchrun`` on GPU instances) with ``SM_CHANNEL_TRAIN``, ``SM_MODEL_DIR``,
``SM_OUTPUT_DATA_DIR`` and ``SM_HOSTS`` set, which ``training.__main__`` and
``training.job_env`` pick up.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from training.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
