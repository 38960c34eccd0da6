"""The training pipeline behind ``python -m training train``, one step per function.

:func:`run_training` reads top to bottom as the run goes: the run's settings (paths, split,
preset, explicit hyperparameters, gate, review policy) -> the base model checked -> data (load,
de-duplicate the model inputs, split) -> the recipe for this data (``training.recipe``: the
training config and review policy, logged with where each value came from) -> fine-tune ->
export the served artifact (parity gate: int8, else per-channel int8, else fp32) -> the
long-ticket strategy (chosen on the validation split) -> the linear baseline (compared on
validation and test, shipped alone or averaged in if it wins on validation) -> an
ensemble's confidence cascade (``training.cascade``: its bar chosen on the clean and noisy
validation split) -> review threshold (chosen on the validation split by the policy, on the
cascaded scores) -> evaluate the served artifact once on
the clean and the noisy test split, with bootstrap intervals -> optimization report ->
``train_summary.json``. The recipe needs the data (``auto`` reads the training split), so it is
resolved after the split; the preset and the explicit values are checked before any data is
read. Each step is a function with its inputs and outputs named; the command line
(``training/__main__.py``) only parses arguments into a :class:`TrainRun` and calls
:func:`run_training`.

Under ``torchrun`` every process runs the pipeline: all of them fine-tune, the main process
alone writes the splits first (the others then read them) and exports, evaluates and reports.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.baseline import run_baseline
from training.config import DEFAULT_BASE_MODEL, TrainConfig
from training.data import DEFAULT_LABEL_COLUMN, DEFAULT_TEXT_COLUMN, Splits
from training.long_text import make_room_for_long_tickets, select_long_text
from training.noise import NOISY_SEED
from training.recipe import (
    Preset,
    PresetError,
    Recipe,
    default_preset,
    load_preset,
    profile_training_data,
    resolve_recipe,
)
from training.review_threshold import choose_review_threshold, store_review_threshold, top_scores_and_correct
from triage_core.artifact import store_training_mix
from triage_core.preprocessing import PreprocessConfig

log = logging.getLogger("training")


@dataclass
class TrainRun:
    """What one ``python -m training train`` was asked to do: the parsed command line, with
    every path already resolved (``training.__main__.environment_defaults``)."""

    data: Path
    output: Path
    work_dir: Path
    splits_dir: Path
    reports_dir: Path
    text_column: str = DEFAULT_TEXT_COLUMN
    label_column: str = DEFAULT_LABEL_COLUMN
    encoding: str = "utf-8"
    validation_size: float = 0.1
    test_size: float = 0.1
    split_seed: int = 42
    # "banking77", "auto" or a .toml/.json preset file; None: banking77 for the bundled Banking77
    # file, auto for any other (training.recipe)
    preset: str | None = None
    base_model: str | None = None  # None: the preset file's, else all-MiniLM-L6-v2
    # Hyperparameters given explicitly; every other one comes from the recipe.
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    checkpoint_dir: Path | None = None
    keep_checkpoint: bool = False
    # export gate (validation split) and review threshold
    fp32_max_score_diff: float = 1e-3
    int8_min_agreement: float = 0.95
    int8_max_f1_drop: float = 1.0
    # Review policy values given explicitly (target_accuracy, max_review_share); the rest from the recipe.
    review: dict[str, Any] = field(default_factory=dict)
    # pipeline steps
    export: bool = True
    evaluate: bool = True
    optimization_report: bool = True
    baseline: bool = True  # the linear baseline, compared and shipped if it wins (training.baseline)
    # Cascade policy values given explicitly (enabled, max_f1_loss, margin); the rest from the recipe.
    cascade: dict[str, Any] = field(default_factory=dict)
    # reviewers' corrections (a file, folder or s3:// location) folded into the training split
    corrections: str | None = None


def run_training(run: TrainRun) -> dict[str, Any]:
    """The full pipeline. Returns the summary written to ``<reports>/train_summary.json``."""
    preset = read_preset(run)
    if not is_main_process():  # one log file, the main process's
        return _run_steps(run, preset)
    with log_to_file(run.reports_dir / "train.log"):
        return _run_steps(run, preset)


def _run_steps(run: TrainRun, preset: Preset) -> dict[str, Any]:
    started = time.perf_counter()
    base_model = check_model_source(run.base_model or preset.train.get("base_model") or DEFAULT_BASE_MODEL)
    splits = load_splits(run)
    splits, corrections = fold_in_corrections(run, splits)
    run = make_room_for_long_tickets(run, base_model, splits)
    recipe = choose_recipe(run, preset, base_model, splits)
    result = fine_tune(recipe, splits, run)
    if not is_main_process():
        return {}  # under torchrun: the main process exports, evaluates and reports
    config = recipe.config
    summary = training_summary(run, recipe, splits, result)
    if corrections is not None:
        corrections["validation_macro_f1"]["after"] = round(result.best_val_macro_f1, 4)
        write_json(run.reports_dir / "corrections_report.json", corrections)
        summary["corrections"] = corrections
    if run.export:
        summary.update(export_served_model(run, config, splits, result, summary))
        summary["long_text"] = select_long_text(run.output, splits.validation, run.reports_dir)
        if run.baseline:
            summary["baseline"] = run_baseline(
                run.output,
                splits.train,
                splits.validation,
                splits.test,
                config.preprocessing,
                run.reports_dir,
            )
            from training.cascade import select_cascade

            summary["cascade"] = select_cascade(
                run.output, splits.validation, recipe.cascade, run.reports_dir, recipe.review
            )
        if run.evaluate:  # on the served scores: after the cascade
            summary["review_threshold"] = choose_review_threshold(
                run.output, splits.validation, recipe.review
            )
            store_review_threshold(run.output, summary["review_threshold"])
            summary.update(evaluate_test_splits(run.output, splits.test, run.reports_dir, summary))
        # last manifest write of the run: the drift reference (lambda/ticket_pipeline/review.py)
        store_training_mix(run.output, splits.train.labels)
        if run.optimization_report:
            summary["optimization_report"] = optimization_report(
                result.model_dir, run.output, splits.test, run.reports_dir
            )
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    write_json(run.reports_dir / "train_summary.json", summary)
    log.info(
        "done in %.0f s: best val macro-F1 %.4f; test %s (95%% bootstrap intervals %s); noisy test %s",
        summary["total_seconds"],
        result.best_val_macro_f1,
        summary.get("test_clean", "-"),
        {
            k: v
            for k, v in summary.get("test_confidence_intervals", {}).items()
            if k in ("macro_f1", "accuracy")
        },
        summary.get("test_noisy", "-"),
    )
    return summary


# --- settings ----------------------------------------------------------------------------------
def read_preset(run: TrainRun) -> Preset:
    """The run's preset (``training.recipe``), with the explicit options checked against it
    before any data is read (:func:`recipe_before_data`): a bad value is one line, not an error
    after the split."""
    recipe_before_data(run)
    return load_preset(run.preset or default_preset(run.data))


def recipe_before_data(run: TrainRun) -> Recipe:
    """The recipe without the rules that read the data: the preset's and the explicit values."""
    try:
        preset = load_preset(run.preset or default_preset(run.data))
        return resolve_recipe(
            preset, run.base_model, run.hyperparameters, None, run.review, run.preprocessing, run.cascade
        )
    except PresetError as exc:
        raise SystemExit(str(exc)) from None


def check_model_source(base_model: str) -> str:
    """Before reading any data: a bad model name is one line, not a traceback minutes later."""
    from training.config import ModelSourceError, check_base_model

    try:
        check_base_model(base_model)
    except ModelSourceError as exc:
        raise SystemExit(str(exc)) from None
    return base_model


# --- data --------------------------------------------------------------------------------------
def load_splits(run: TrainRun) -> Splits:
    """The ticket file (model-input duplicates dropped), split train/validation/test or the
    splits already in ``run.splits_dir`` for the same rows. Writes ``data_report.json``."""
    from training.data import DataError, format_support, load_model_inputs, load_or_create_splits
    from training.train import process_state

    try:  # under torchrun the main process writes the splits, the others then read them
        with process_state().main_process_first():
            dataset = load_model_inputs(
                run.data, run.text_column, run.label_column, run.preprocessing, run.encoding
            )
            splits = load_or_create_splits(
                dataset,
                run.splits_dir,
                run.validation_size,
                run.test_size,
                run.split_seed,
                write=is_main_process(),  # one writer per job, not per node (training.job_env)
            )
    except DataError as exc:
        raise SystemExit(f"data error: {exc}") from None
    if is_main_process():
        # this run's load report (re-used splits carry the one of the run that wrote them)
        write_json(run.reports_dir / "data_report.json", {**splits.info, "load_report": dataset.report})
    log.info("per-class support (train/validation/test):\n%s", format_support(splits.info))
    return splits


def fold_in_corrections(run: TrainRun, splits: Splits) -> tuple[Splits, dict[str, Any] | None]:
    """Reviewers' corrections (``run.corrections``) folded into the training split only
    (``training.corrections``); the report, with the previous run's validation score to compare."""
    if run.corrections is None:
        return splits, None
    from functools import partial

    from training.corrections import fold_corrections, previous_validation_score, read_corrections
    from triage_core.preprocessing import preprocess

    rows = read_corrections(run.corrections)
    splits, report = fold_corrections(splits, rows, partial(preprocess, config=run.preprocessing))
    report = {"source": run.corrections, **report}
    report["validation_macro_f1"] = {"before": previous_validation_score(run.reports_dir), "after": None}
    log.info(
        "corrections from %s: %d read, %d relabelled, %d added, %d confirmed, %d held out (validation/test)",
        run.corrections, report["rows_read"], report["relabelled"], report["added"], report["confirmed"],
        report["held_out"],
    )  # fmt: skip
    return splits, report


# --- the recipe --------------------------------------------------------------------------------
def choose_recipe(run: TrainRun, preset: Preset, base_model: str, splits: Splits) -> Recipe:
    """The training config and review policy for this data (``training.recipe``), logged with
    where each value came from."""
    profile = None
    if preset.base == "auto":
        profile = profile_training_data(splits.train, base_model, run.preprocessing)
    recipe = resolve_recipe(
        preset, base_model, run.hyperparameters, profile, run.review, run.preprocessing, run.cascade
    )
    log.info("%s", recipe.describe())
    return recipe


# --- model and training ------------------------------------------------------------------------
def fine_tune(recipe: Recipe, splits: Splits, run: TrainRun):
    """Fine-tune on the training split, choose the epoch on the validation split
    (:func:`training.train.train`). Returns its ``TrainResult``."""
    from training.train import train

    return train(
        recipe.config,
        splits.train,
        splits.validation,
        run.work_dir,
        labels=splits.label_names,
        checkpoint_dir=run.checkpoint_dir,
        keep_checkpoint=run.keep_checkpoint,
        recipe=recipe.to_dict(),
    )


def training_summary(run: TrainRun, recipe: Recipe, splits: Splits, result) -> dict[str, Any]:
    """What was trained on what, and how the fine-tuning went: the summary's first part."""
    from training.config import model_family

    config = recipe.config
    return {
        "data": str(run.data),
        "rows": splits.info["sizes"],
        "labels": len(result.labels),
        "config": config.to_dict(),
        "preset": model_family(config.base_model),
        "recipe": recipe.to_dict(),
        "best_epoch": result.best_epoch,
        "best_val_macro_f1": result.best_val_macro_f1,
        "epochs_run": len(result.history),
        "fine_tune_seconds": round(result.train_seconds, 1),
        "processes": result.world_size,
        "resumed_from": result.resumed_from,
        "stages": result.stages,
        "hf_model_dir": str(result.model_dir),
    }


# --- save: the served artifact -----------------------------------------------------------------
def export_served_model(
    run: TrainRun, config: TrainConfig, splits: Splits, result, summary: dict[str, Any]
) -> dict[str, Any]:
    """Export the best epoch to the int8 ONNX artifact in ``run.output``, gated on the
    validation split. A failed gate writes ``summary`` with the reason and exits non-zero."""
    from training.export import (
        ExportError,
        ParityTolerance,
        export_artifact,
        export_report,
        export_report_path,
    )

    t0 = time.perf_counter()
    tolerance = ParityTolerance(
        fp32_max_score_diff=run.fp32_max_score_diff,
        int8_min_agreement=run.int8_min_agreement,
        int8_max_macro_f1_drop_points=run.int8_max_f1_drop,
    )
    try:
        export_artifact(
            result.model_dir,
            run.output,
            labels=result.labels,
            max_length=config.max_length,
            preprocessing=config.preprocessing,
            scoring=config.scoring,
            base_model=config.base_model,
            parity_texts=splits.validation.texts,
            parity_labels=splits.validation.labels,
            tolerance=tolerance,
        )
    except ExportError as exc:
        write_json(run.reports_dir / "train_summary.json", {**summary, "export_error": str(exc)})
        raise SystemExit(f"{exc} (details: {export_report_path(run.output)})") from None
    report = export_report(run.output)
    for warning in report["warnings"]:
        log.warning("export: %s", warning)
    log.info("served model: %s (%s)", report["served"]["model"], report["served"]["reason"])
    return {
        "artifact": str(run.output),
        "export_seconds": round(time.perf_counter() - t0, 1),
        "export": report,
    }


# --- evaluate ----------------------------------------------------------------------------------
def evaluate_test_splits(
    artifact_dir: Path, test, reports_dir: Path, summary: dict[str, Any]
) -> dict[str, Any]:
    """Evaluate the served artifact on the clean and the noisy test split.

    Writes ``<reports>/test/`` (clean) and ``<reports>/test/noisy/`` (metrics.json + plots, the
    layout of ``python -m training evaluate --noisy``) and the artifact's ``metrics.json``.
    """
    from training.evaluate import compare_reports, evaluate_artifact, headline, write_evaluation
    from training.noise import noisy_variant
    from triage_core.artifact import METRICS_FILE
    from triage_core.inference import ArtifactClassifier

    classifier = ArtifactClassifier(artifact_dir)
    clean = evaluate_artifact(artifact_dir, test.texts, test.labels, classifier=classifier)
    noisy_texts = noisy_variant(test.texts, seed=NOISY_SEED, pool="eval")
    noisy = evaluate_artifact(artifact_dir, noisy_texts, test.labels, classifier=classifier)
    data = {"split": "test", "rows": len(test.texts), "source": summary["data"]}
    clean["data"] = data
    noisy["data"] = {**data, "noise": {"pool": "eval", "seed": NOISY_SEED}}
    clean["noisy"] = {**headline(noisy), "report": "noisy/metrics.json"}
    clean["clean_vs_noisy"] = compare_reports(clean, noisy)
    clean["training"] = {
        k: summary[k] for k in ("best_epoch", "best_val_macro_f1", "epochs_run", "fine_tune_seconds")
    }
    clean["selection"] = (
        "model and review threshold chosen on the validation split; this test split is scored once"
    )
    if "review_threshold" in summary:
        review = review_on_test(artifact_dir, test, summary["review_threshold"], reports_dir / "test")
        clean["review_threshold"] = review
        summary["review_threshold"] = review
    write_evaluation(noisy, reports_dir / "test" / "noisy", title="Noisy test tickets:")
    write_evaluation(clean, reports_dir / "test", title="Test split:")
    artifact_metrics = dict(clean)
    artifact_metrics["noisy"] = {k: v for k, v in clean["noisy"].items() if k != "report"}
    write_json(Path(artifact_dir) / METRICS_FILE, artifact_metrics)
    return {
        "test_clean": headline(clean),
        "test_noisy": headline(noisy),
        "test_confidence_intervals": clean["confidence_intervals"],
    }


def review_on_test(artifact_dir: Path, test, review: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """How the validation-chosen threshold does on the test split, the test split's coverage
    curve, and both curves as ``<out_dir>/review_coverage.png``."""
    from training.evaluate import coverage_curve, wilson_interval
    from training.plots import plot_review_coverage

    top, right = top_scores_and_correct(artifact_dir, test)
    accepted = top >= review["threshold"] if review["review_share"] < 1.0 else np.zeros(len(top), dtype=bool)
    review = dict(review)
    review["test"] = {
        "accepted_accuracy": float(right[accepted].mean()) if accepted.any() else None,
        "review_share": float(1 - accepted.mean()),
        "accepted_accuracy_interval_95": wilson_interval(int(right[accepted].sum()), int(accepted.sum())),
    }
    review["test_curve"] = coverage_curve(top, right)
    plot_review_coverage(review, out_dir / "review_coverage.png")
    review["plot"] = "review_coverage.png"
    return review


def optimization_report(hf_model_dir: Path, artifact_dir: Path, test, reports_dir: Path) -> str | None:
    """torch fp32 vs ONNX fp32 vs ONNX int8 (``training.optimization_report``)."""
    from training import optimization_report as report_module

    path = report_module.run_optimization_report(
        hf_model_dir=hf_model_dir,
        artifact_dir=artifact_dir,
        texts=test.texts,
        labels=test.labels,
        out_dir=reports_dir,
    )
    return str(path) if path else None


# --- plumbing ----------------------------------------------------------------------------------
def is_main_process() -> bool:
    from training.train import process_state

    return process_state().is_main_process


@contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Copy the pipeline's log (INFO and up) to ``path`` while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)  # the epoch lines must reach the file whatever the root level
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path
