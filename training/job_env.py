"""Where a training run's files go, and which of a job's processes writes them.

A SageMaker training job uploads two directories of every host when it ends: ``/opt/ml/model``
(``SM_MODEL_DIR``, as ``model.tar.gz``) and ``/opt/ml/output/data`` (``SM_OUTPUT_DATA_DIR``, as
``output.tar.gz``); the rest of the container, ``/opt/ml`` included, is thrown away. SageMaker
aggregates what every host wrote into one archive and asks that the hosts' file names do not
clash ("How Amazon SageMaker AI Processes Training Output",
https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-output.html).
So one process of the whole job writes the shared files (splits, reports, the artifact, the
fp32 model): the global rank 0 process under torchrun, and without torchrun the process on the
first host of ``SM_HOSTS``.

Plain functions of the environment (no torch, no process group), so the launcher's tests and
the pipeline agree on them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

FP32_DIR_NAME = "onnx-fp32"


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def is_writer(env: Mapping[str, str] | None = None) -> bool:
    """True for the one process of the job that writes shared files.

    * ``RANK`` (set by torchrun, and by SageMaker's torchrun driver through it, for every
      process of every node): the writer is global rank 0; ``LOCAL_RANK`` 0 is one process
      *per node* and would write once on every host.
    * Without ``RANK`` but with several ``SM_HOSTS`` (each host runs the entry point once):
      the first host. SageMaker lists the hosts sorted (the training toolkit's
      ``resourceconfig.json``: "sorted lexicographically"; the SDK v3 driver sorts them too).
    * Otherwise the process is alone: it writes.
    """
    env = _env(env)
    rank = env.get("RANK", "").strip()
    if rank:
        return int(rank) == 0
    hosts_json = env.get("SM_HOSTS", "").strip()
    current = env.get("SM_CURRENT_HOST", "").strip()
    if hosts_json and current:
        hosts = sorted(json.loads(hosts_json))
        if len(hosts) > 1:
            return current == hosts[0]
    return True


def side_dir(output_dir: str | Path, env: Mapping[str, str] | None = None) -> Path:
    """The directory for the export's by-products (fp32 ONNX model, ``export_report.json``),
    kept out of the served artifact directory ``output_dir``.

    Locally ``<output_dir>/../onnx-fp32``. In a SageMaker job whose artifact directory is
    ``SM_MODEL_DIR``, ``<SM_OUTPUT_DATA_DIR>/onnx-fp32``: the parent of ``/opt/ml/model`` is
    not uploaded, ``SM_OUTPUT_DATA_DIR`` is (``output.tar.gz``).
    """
    env = _env(env)
    output_dir = Path(output_dir)
    model_dir, data_dir = env.get("SM_MODEL_DIR"), env.get("SM_OUTPUT_DATA_DIR")
    if model_dir and data_dir and _same_path(output_dir, Path(model_dir)):
        return Path(data_dir) / FP32_DIR_NAME
    return output_dir.parent / FP32_DIR_NAME


def _same_path(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)
