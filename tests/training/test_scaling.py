"""What a bigger run needs, on CPU and tiny models: two processes (torchrun, gloo) train one
model; an interrupted run resumes from its checkpoint to the same weights; gradient accumulation
takes fewer, larger optimizer steps."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.test_train import _write_csv, fast_config, tiny_dataset
from training.train import train


class Interrupted(Exception):
    """Stands for the spot instance going away."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_train_one_model_with_torchrun(tiny_base_model: Path, tmp_path: Path) -> None:
    """`torchrun --nproc-per-node 2`: Accelerate joins the gloo process group, each process takes
    half of every epoch's batches, and the main process alone writes the model and the artifact."""
    from triage_core.inference import ArtifactClassifier

    data_file = _write_csv(tmp_path / "tickets.csv", tiny_dataset(20))
    out = tmp_path / "run"
    argv = ["train", "--data", str(data_file), "--base-model", str(tiny_base_model), "--epochs", "2",
            "--batch-size", "8", "--max-length", "32", "--threads", "1", "--output", str(out / "model"),
            "--optimization-report", "false", "--evaluate", "false"]  # fmt: skip
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(_free_port()), "-m", "training", *argv],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "reports" / "train_summary.json").read_text())
    assert summary["processes"] == 2
    history = [json.loads(line) for line in (out / "work" / "train_metrics.jsonl").read_text().splitlines()]
    # 48 training rows, batches of 8: 6 batches per epoch, 3 per process
    assert [r["optimizer_steps"] for r in history] == [3, 6]
    log = (out / "reports" / "train.log").read_text()
    assert log.count("epoch 1/2: loss") == 1 and "2 process(es)" in log  # one log, the main process's
    assert ArtifactClassifier(out / "model").predict_scores(["my card has not arrived"]).shape == (1, 3)


def _weights(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("save_steps", [0, 4], ids=["after-an-epoch", "mid-epoch"])
def test_interrupted_run_resumes_to_the_same_model(
    tiny_base_model: Path, tmp_path: Path, save_steps: int
) -> None:
    from training.modeling import load_classifier

    config = fast_config(tiny_base_model, epochs=3, early_stopping_patience=0, save_steps=save_steps)
    data, val = tiny_dataset(), tiny_dataset(4, seed=1)
    whole = train(config, data, val, tmp_path / "whole")
    rng_after_whole = torch.get_rng_state()

    def stop_in_epoch_2(epoch: int, model) -> None:
        if epoch == 2:
            raise Interrupted

    checkpoints = tmp_path / "ckpt"
    with pytest.raises(Interrupted):
        train(config, data, val, tmp_path / "first", on_epoch_end=stop_in_epoch_2, checkpoint_dir=checkpoints)
    assert (checkpoints / "loop_state.json").is_file()
    resumed = train(config, data, val, tmp_path / "second", checkpoint_dir=checkpoints)
    # the same random draws (dropout masks) from the resume point on: torch's generator ends where
    # the uninterrupted run's did
    assert torch.equal(torch.get_rng_state(), rng_after_whole)
    # 36 rows, batches of 8: 5 steps per epoch; with save_steps=4 the last checkpoint before the
    # interruption is step 8, the 3rd batch of epoch 2
    assert resumed.resumed_from == ({"epoch": 2, "batches_done": 0, "global_step": 5} if not save_steps
                                    else {"epoch": 2, "batches_done": 3, "global_step": 8})  # fmt: skip
    assert [r["val_macro_f1"] for r in resumed.history] == [r["val_macro_f1"] for r in whole.history]
    assert resumed.best_epoch == whole.best_epoch
    a, b = _weights(load_classifier(whole.model_dir)), _weights(load_classifier(resumed.model_dir))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)
    assert not checkpoints.exists()  # removed after the finished run (keep_checkpoint=False)


def test_checkpoint_of_another_config_is_not_resumed(tiny_base_model: Path, tmp_path: Path) -> None:
    data, val = tiny_dataset(), tiny_dataset(4, seed=1)
    checkpoints = tmp_path / "ckpt"
    train(fast_config(tiny_base_model, epochs=1), data, val, tmp_path / "a", checkpoint_dir=checkpoints,
          keep_checkpoint=True)  # fmt: skip
    other = train(fast_config(tiny_base_model, epochs=1, learning_rate=1e-3), data, val, tmp_path / "b",
                  checkpoint_dir=checkpoints)  # fmt: skip
    assert other.resumed_from is None and len(other.history) == 1


def test_gradient_accumulation_takes_fewer_larger_steps(tiny_base_model: Path, tmp_path: Path) -> None:
    config = fast_config(tiny_base_model, epochs=2, gradient_accumulation_steps=4, early_stopping_patience=0)
    result = train(config, tiny_dataset(), tiny_dataset(4, seed=1), tmp_path)
    # 36 rows in batches of 8: 5 batches per epoch, an optimizer step every 4 and at the epoch's end
    assert [r["optimizer_steps"] for r in result.history] == [2, 4]
