"""``python -m training {train,evaluate,cascade,package,experiment}``: the training command line.

This module only parses arguments. ``train`` turns them into a :class:`~training.pipeline.TrainRun`
and calls :func:`training.pipeline.run_training`, the whole pipeline: load -> split -> fine-tune
-> export (ONNX int8 artifact) -> evaluate the served artifact on the clean and the noisy test
split -> optimization report. ``experiment`` is :mod:`training.experiment`'s, ``evaluate``
:mod:`training.evaluate`'s, ``cascade`` :mod:`training.cascade`'s.

The same command runs unchanged as a SageMaker training job (``training/sagemaker_entry.py``
calls it): when SageMaker's variables are set they become the defaults:

* ``SM_CHANNEL_TRAIN``: directory of the ``train`` channel; its CSV/JSONL file is the data;
* ``SM_MODEL_DIR``: the serving artifact is written there (SageMaker tars it into
  ``model.tar.gz`` with the files at the archive root, ready for ``ModelDataUrl``);
* ``SM_OUTPUT_DATA_DIR``: splits, reports, logs and the Hugging Face checkpoint.

Hyperparameters arrive as ``--name value`` arguments (SageMaker passes them that way);
booleans accept true/false. Explicit arguments always win over the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from training.config import DEFAULT_BASE_MODEL, TrainConfig
from training.data import DEFAULT_DATA, DEFAULT_LABEL_COLUMN, DEFAULT_TEXT_COLUMN
from training.pipeline import TrainRun

log = logging.getLogger("training")

LOCAL_ARTIFACTS = Path("artifacts")


# --- SageMaker environment -------------------------------------------------------------------
def find_data_file(directory: str | Path) -> Path:
    """The ticket file in a SageMaker channel directory: ``train.csv`` / ``train.jsonl`` or the
    only CSV/JSONL file in it."""
    directory = Path(directory)
    for name in ("train.csv", "train.jsonl"):
        if (directory / name).is_file():
            return directory / name
    candidates = sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in {".csv", ".jsonl", ".ndjson"}
    )
    if len(candidates) != 1:
        raise SystemExit(
            f"expected one .csv/.jsonl file (or train.csv) in the channel directory {directory}, "
            f"found {[str(p) for p in candidates]}"
        )
    return candidates[0]


def environment_defaults(env: dict[str, str] | None = None, output: Path | None = None) -> dict[str, Any]:
    """Paths for ``train``: SageMaker's when its variables are set, local ones otherwise.

    Locally, work/, splits/ and reports/ sit next to the artifact directory (``artifacts/model``
    by default, or ``output``), as the fp32 ONNX model does: one run, one folder.
    """
    env = dict(os.environ if env is None else env)
    root = Path(output).parent if output is not None else LOCAL_ARTIFACTS
    defaults: dict[str, Any] = {
        "data": DEFAULT_DATA,
        "output": LOCAL_ARTIFACTS / "model",
        "work_dir": root / "work",
        "splits_dir": root / "splits",
        "reports_dir": root / "reports",
    }
    if env.get("SM_CHANNEL_TRAIN"):
        defaults["data"] = find_data_file(env["SM_CHANNEL_TRAIN"])
    if env.get("SM_MODEL_DIR"):
        defaults["output"] = Path(env["SM_MODEL_DIR"])
    if env.get("SM_OUTPUT_DATA_DIR"):
        out = Path(env["SM_OUTPUT_DATA_DIR"])
        defaults.update(work_dir=out / "work", splits_dir=out / "splits", reports_dir=out / "reports")
    return defaults


# --- argument parsing ------------------------------------------------------------------------
def _bool(value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _option(parser: argparse.ArgumentParser, name: str, *aliases: str, **kwargs: Any) -> None:
    """``--some-name`` with the ``--some_name`` alias (SageMaker hyperparameter keys vary)."""
    flags = [f"--{name}"]
    for flag in (f"--{name}", *aliases):
        if "-" in flag[2:]:
            flags.append("--" + flag[2:].replace("-", "_"))
    flags += aliases
    parser.add_argument(*dict.fromkeys(flags), **kwargs)


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    io = parser.add_argument_group("data and outputs (SageMaker variables set the defaults)")
    _option(
        io, "data", type=Path, default=None, help=f"CSV or JSON Lines ticket file (default {DEFAULT_DATA})"
    )
    _option(io, "text-column", default=DEFAULT_TEXT_COLUMN)
    _option(io, "label-column", default=DEFAULT_LABEL_COLUMN)
    _option(io, "encoding", default="utf-8", help="encoding of the ticket file")
    _option(io, "output", type=Path, default=None, help="serving artifact directory (artifacts/model)")
    _option(io, "work-dir", type=Path, default=None, help="Hugging Face checkpoint + epoch log")
    _option(io, "splits-dir", type=Path, default=None, help="train/validation/test CSVs (artifacts/splits)")
    _option(io, "reports-dir", type=Path, default=None, help="evaluation + optimization reports")
    _option(io, "validation-size", type=float, default=0.1)
    _option(io, "test-size", type=float, default=0.1)
    _option(io, "split-seed", type=int, default=42, help="seed of the train/validation/test split")
    _option(
        io,
        "corrections",
        default=None,
        help="reviewers' corrections (make export-corrections: a .jsonl/.csv file, a folder or an s3:// "
        "key or prefix) folded into the training split only; report: <reports>/corrections_report.json",
    )

    hp = parser.add_argument_group(
        "hyperparameters",
        "Unset options come from the recipe (docs/training.md, 'Recipe'): --preset banking77 (the "
        "default for the bundled Banking77 file: the values shown), auto (the default for other "
        "data: the --base-model family's preset, training.config.PRESETS, then rules that read the "
        "training split) or a .toml/.json file. An option given here always wins.",
    )
    _option(
        hp,
        "preset",
        default=None,
        help="banking77, auto or a preset file (default: banking77 for the bundled data, else auto)",
    )
    _option(hp, "base-model", default=None, help=f"path or hub id; default {DEFAULT_BASE_MODEL}")
    _option(hp, "epochs", type=int, default=None, help=f"preset ({d.epochs})")
    _option(hp, "learning-rate", type=float, default=None, help=f"preset ({d.learning_rate})")
    _option(
        hp, "head-learning-rate", type=float, default=None, help=f"preset ({d.head_learning_rate}); 0 = lr"
    )
    _option(hp, "batch-size", type=int, default=None, help=f"preset ({d.batch_size})")
    _option(
        hp,
        "max-length",
        type=int,
        default=None,
        help="tokens the model reads; default: the training split's 99th percentile, rounded up to a "
        "multiple of 32, at most the model's 512 (Banking77: 64)",
    )
    _option(
        hp,
        "truncation",
        choices=["head", "head_tail"],
        default=None,
        help="what fine-tuning reads of a longer ticket; default: head_tail when over 1%% of the "
        "training tickets are longer, else head (serving's strategy is chosen on validation)",
    )
    _option(hp, "warmup-ratio", type=float, default=None, help=f"preset ({d.warmup_ratio})")
    _option(hp, "weight-decay", type=float, default=None, help=f"preset ({d.weight_decay})")
    _option(hp, "seed", type=int, default=None, help=f"preset ({d.seed})")
    _option(hp, "label-smoothing", type=float, default=None, help=f"preset ({d.label_smoothing})")
    _option(
        hp,
        "class-weights",
        type=_bool,
        default=None,
        metavar="{true,false}",
        help=f"preset ({str(d.class_weights).lower()}); auto: on when the labels are imbalanced",
    )
    _option(
        hp,
        "early-stopping-patience",
        type=int,
        default=None,
        help=f"preset ({d.early_stopping_patience}); 0 = off",
    )
    _option(
        hp,
        "noisy-augmentation",
        type=float,
        default=None,
        help=f"preset ({d.noisy_augmentation}); share of training rows wrapped in e-mail/chat noise "
        "each epoch; 0 = off (auto: off)",
    )
    _option(
        hp,
        "noise-context",
        choices=["banking77", "neutral"],
        default=None,
        help=f"preset ({d.noise_context}); neutral = no Banking77 context sentences (auto: neutral)",
    )
    _option(
        hp,
        "noise-pools",
        type=_str_list,
        default=None,
        help=f"augmentation noise pools: train, dev, augment (default {','.join(d.noise_pools)})",
    )
    _option(
        hp,
        "minority-min-examples",
        type=int,
        default=None,
        help=f"preset ({d.minority_min_examples}); oversample labels below this many training rows "
        "with noisy copies; 0 = off",
    )
    _option(hp, "threads", type=int, default=None, help=f"preset ({d.threads}); torch threads; 0 = all cores")

    scale = parser.add_argument_group("scaling: GPUs, processes, checkpoints (training.train)")
    _option(
        scale,
        "gradient-accumulation-steps",
        type=int,
        default=None,
        help="optimizer step every N batches",
    )
    _option(
        scale,
        "mixed-precision",
        choices=["auto", "no", "fp16", "bf16"],
        default=None,
        help="auto = bf16/fp16 on a GPU, fp32 on CPU",
    )
    _option(scale, "save-steps", type=int, default=None, help="also checkpoint every N steps")
    _option(
        scale,
        "checkpoint-dir",
        type=Path,
        default=None,
        help="resumable checkpoints (default <work-dir>/checkpoint; /opt/ml/checkpoints in a spot job)",
    )
    _option(
        scale,
        "keep-checkpoint",
        type=_bool,
        default=False,
        metavar="{true,false}",
        help="keep the checkpoint after a finished run",
    )
    _add_strategy_arguments(parser, d)

    pre = parser.add_argument_group("preprocessing (stored in the artifact, applied when serving)")
    p = d.preprocessing
    _option(pre, "mask-pii", type=_bool, default=p.mask_pii, metavar="{true,false}")
    _option(pre, "extract-request", type=_bool, default=p.extract_request, metavar="{true,false}")
    _option(pre, "emojis", choices=["text", "remove", "keep"], default=p.emojis)
    _option(pre, "remove-stopwords", type=_bool, default=p.remove_stopwords, metavar="{true,false}")

    gate = parser.add_argument_group("export gate (validation split) and review threshold")
    _option(gate, "fp32-max-score-diff", type=float, default=1e-3, help="torch vs fp32 ONNX scores")
    _option(gate, "int8-min-agreement", type=float, default=0.95, help="int8 vs fp32 top-label agreement")
    _option(gate, "int8-max-f1-drop", type=float, default=1.0, help="macro-F1 points int8 may lose")
    _option(
        gate,
        "review-target-accuracy",
        "--review-precision",
        type=float,
        default=None,
        help="review threshold: the lowest top score whose auto-accepted validation tickets reach this "
        "accuracy (recipe: banking77 0.98, auto 0.95)",
    )
    _option(
        gate,
        "review-max-share",
        type=float,
        default=None,
        help="at most this share of tickets goes to review; if the target accuracy needs more, the "
        "ceiling wins and the report says so (recipe: banking77 1.0 = no ceiling, auto 0.5)",
    )

    steps = parser.add_argument_group("pipeline steps")
    _option(steps, "export", type=_bool, default=True, metavar="{true,false}", help="build the int8 artifact")
    _option(steps, "evaluate", type=_bool, default=True, metavar="{true,false}")
    _option(steps, "optimization-report", type=_bool, default=True, metavar="{true,false}")
    _option(
        steps,
        "baseline",
        type=_bool,
        default=True,
        metavar="{true,false}",
        help="TF-IDF + logistic regression baseline: reported, shipped if it wins on validation",
    )
    from training.cascade import add_policy_arguments

    add_policy_arguments(steps)


def _str_list(value: str) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _add_strategy_arguments(parser: argparse.ArgumentParser, d: TrainConfig) -> None:
    """Transfer-learning strategies (docs/training.md, "Model quality: transfer-learning strategies")."""
    st = parser.add_argument_group("transfer-learning strategies")
    _option(
        st, "head", choices=["cls", "mean", "mlp"], default=None, help=f"preset ({d.head}); classifier head"
    )
    _option(st, "head-dropout", type=float, default=None, help="mean/mlp heads")
    _option(st, "head-hidden", type=int, default=None, help="mlp width; 0 = encoder width")
    _option(st, "loss", choices=["softmax", "ovr"], default=None, help="ovr = one-vs-rest sigmoid/BCE")
    _option(st, "freeze-encoder-epochs", type=int, default=None, help="head only first")
    _option(
        st,
        "freeze-embeddings",
        type=_bool,
        default=None,
        metavar="{true,false}",
        help=f"preset ({str(d.freeze_embeddings).lower()}); keep the word embeddings fixed (faster steps)",
    )
    _option(st, "layer-lr-decay", type=float, default=None, help="layer-wise LR decay; 1 = off")
    _option(st, "mlm-epochs", type=float, default=None, help="domain-adaptive MLM passes; 0 = off")
    _option(st, "mlm-data", default=None, help="unlabeled .txt/.csv/.jsonl (default: training texts)")
    _option(st, "mlm-learning-rate", type=float, default=None)
    _option(st, "mlm-probability", type=float, default=None)
    _option(st, "contrastive-epochs", type=float, default=None, help="SetFit stage; 0 = off")
    _option(st, "contrastive-learning-rate", type=float, default=None)
    _option(st, "contrastive-temperature", type=float, default=None)
    _option(
        st,
        "distill-teachers",
        type=_str_list,
        default=None,
        help="comma-separated fine-tuned model dirs (work/hf_model) whose soft labels the student learns",
    )
    _option(
        st, "distill-seeds", type=_str_list, default=None, help="comma-separated seeds of teachers to train"
    )
    _option(st, "distill-alpha", type=float, default=None)
    _option(st, "distill-temperature", type=float, default=None)


STRATEGY_FIELDS = (
    "head",
    "head_dropout",
    "head_hidden",
    "loss",
    "freeze_encoder_epochs",
    "freeze_embeddings",
    "layer_lr_decay",
    "mlm_epochs",
    "mlm_data",
    "mlm_learning_rate",
    "mlm_probability",
    "contrastive_epochs",
    "contrastive_learning_rate",
    "contrastive_temperature",
    "distill_teachers",
    "distill_seeds",
    "distill_alpha",
    "distill_temperature",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_arguments(sub.add_parser("train", help="load, split, fine-tune, export, evaluate"))
    evaluate = sub.add_parser(
        "evaluate", help="evaluate an artifact on a CSV/JSONL file", add_help=False, prefix_chars="\0"
    )
    evaluate.add_argument("args", nargs=argparse.REMAINDER)
    cascade = sub.add_parser(
        "cascade",
        help="choose a trained ensemble's confidence cascade on validation (no re-training)",
        add_help=False,
        prefix_chars="\0",
    )
    cascade.add_argument("args", nargs=argparse.REMAINDER)
    package = sub.add_parser("package", help="pack an artifact as model.tar.gz for SageMaker")
    package.add_argument("--model", type=Path, default=LOCAL_ARTIFACTS / "model")
    package.add_argument("--output", type=Path, default=None, help="default: <model>/../model.tar.gz")
    from training.experiment import add_experiment_arguments

    add_experiment_arguments(
        sub.add_parser("experiment", help="run a named set of configurations, write one comparison table")
    )
    return parser


HYPERPARAMETERS = (
    "epochs", "learning_rate", "head_learning_rate", "batch_size", "max_length", "truncation",
    "warmup_ratio",
    "weight_decay", "seed", "label_smoothing", "class_weights", "early_stopping_patience",
    "noisy_augmentation", "noise_pools", "noise_context", "minority_min_examples", "threads",
    "gradient_accumulation_steps", "mixed_precision", "save_steps", *STRATEGY_FIELDS,
)  # fmt: skip


def run_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> TrainRun:
    """The parsed ``train`` arguments as a :class:`~training.pipeline.TrainRun`; paths left
    unset take their defaults from the environment (:func:`environment_defaults`)."""
    from training.cascade import policy_given
    from triage_core.preprocessing import PreprocessConfig

    paths = environment_defaults(env, output=args.output)
    for key in paths:
        if getattr(args, key) is not None:
            paths[key] = getattr(args, key)
    preprocessing = PreprocessConfig(
        mask_pii=args.mask_pii,
        extract_request=args.extract_request,
        emojis=args.emojis,
        remove_stopwords=args.remove_stopwords,
    )
    given = {name: getattr(args, name) for name in HYPERPARAMETERS if getattr(args, name) is not None}
    return TrainRun(
        **paths,
        text_column=args.text_column,
        label_column=args.label_column,
        encoding=args.encoding,
        validation_size=args.validation_size,
        test_size=args.test_size,
        split_seed=args.split_seed,
        preset=args.preset,
        base_model=args.base_model,
        hyperparameters=given,
        preprocessing=preprocessing,
        checkpoint_dir=args.checkpoint_dir,
        keep_checkpoint=args.keep_checkpoint,
        fp32_max_score_diff=args.fp32_max_score_diff,
        int8_min_agreement=args.int8_min_agreement,
        int8_max_f1_drop=args.int8_max_f1_drop,
        review={
            name: value
            for name, value in (
                ("target_accuracy", args.review_target_accuracy),
                ("max_review_share", args.review_max_share),
            )
            if value is not None
        },
        export=args.export,
        evaluate=args.evaluate,
        optimization_report=args.optimization_report,
        baseline=args.baseline,
        cascade=policy_given(args),
        corrections=args.corrections,
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The training config the ``train`` arguments ask for, before the data is read (the auto
    rules, which read it, left out): what the pipeline's recipe starts from."""
    from training.pipeline import recipe_before_data

    return recipe_before_data(run_from_args(args)).config


# --- commands ----------------------------------------------------------------------------------
def run_package(args: argparse.Namespace) -> Path:
    from training.export import pack_model_tar

    output = args.output or args.model.parent / "model.tar.gz"
    path = pack_model_tar(args.model, output)
    log.info("wrote %s (%d bytes): upload it to S3 and use it as ModelDataUrl", path, path.stat().st_size)
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "train":
        from training.pipeline import run_training

        run_training(run_from_args(args))
    elif args.command == "evaluate":
        from training import evaluate

        return int(evaluate.main(args.args) or 0)
    elif args.command == "cascade":
        from training import cascade

        return int(cascade.main(args.args) or 0)
    elif args.command == "package":
        run_package(args)
    elif args.command == "experiment":
        from training.experiment import run_experiment

        run_experiment(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
