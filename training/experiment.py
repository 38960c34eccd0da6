"""``python -m training experiment --set <name>``: train a named set of configurations and rank
them on the validation split, with the served int8 model.

Every row: fine-tune (``training.train.train``) -> export the int8 artifact (parity gate on the
validation split) -> evaluate it with ``ArtifactClassifier`` (the server's code) on the clean
validation split and on its noisy e-mail/chat variant (``training.noise``, pool ``select``: held
out from the e-mail rules and from training; seed 2024). The test split is never read here: it is
scored once, for the chosen default, by ``make train``. The split is the one ``make train`` uses
(``artifacts/splits``, re-used when its fingerprint matches; created the same way otherwise).

Outputs in ``--output`` (default ``artifacts/experiments/<set>``): ``<row>/model`` (the artifact),
``<row>/work`` (checkpoint, epoch log), ``<row>/result.json``, and the table ``results.md`` +
``results.json`` (rewritten after every row, so a stopped run still leaves a table). Finished
rows are re-used on the next run (``--force`` retrains them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.noise import NOISY_SEED

log = logging.getLogger(__name__)

SELECTION_NOISE_POOL = "select"  # held out from the rules and training; the test uses "eval"


@dataclass(frozen=True)
class Row:
    name: str
    what: str
    overrides: dict[str, Any] = field(default_factory=dict)
    teachers_from: tuple[str, ...] = ()  # distillation: these rows' fine-tuned models are the teachers


def _two_seeds(name: str, what: str, overrides: dict[str, Any] | None = None) -> tuple[Row, Row]:
    """A row and its twin with training seed 43 (``<name>-seed-43``): one seed's noise on the
    1,000 validation tickets is about a point, so the selection compares two-seed means."""
    overrides = overrides or {}
    return Row(name, what, overrides), Row(
        f"{name}-seed-43", f"{what}, training seed 43", {**overrides, "seed": 43}
    )


@dataclass(frozen=True)
class ExperimentSet:
    description: str
    base: dict[str, Any]  # applied to every row (e.g. the reduced budget)
    rows: tuple[Row, ...]
    # "clean": validation macro-F1; "mean": mean of the clean and the noisy validation macro-F1
    rank_by: str = "clean"
    # "": rows start from TrainConfig (the base model's family preset); "auto": from the auto
    # recipe resolved on the split's training data (training.recipe), for data of any domain
    recipe: str = ""
    # the noise of the noisy validation tickets: "banking77" or "neutral" (training.noise contexts)
    noise_context: str = "banking77"


# Every row is one change from the [CLS]-pooler baseline (the Hugging Face default head, and the
# project's default before the ablation picked the MLP head): the sets pin that baseline so the
# table stays reproducible whatever the current default is.
BASELINE = {"head": "cls", "freeze_embeddings": False}
_STRATEGY_ROWS = (
    Row("baseline", "[CLS]-pooler head, softmax CE, label smoothing 0.1, class weights"),
    Row("mean-head", "mean-pooling head", {"head": "mean"}),
    Row("ovr", "one-vs-rest: sigmoid per class, binary CE", {"loss": "ovr"}),
    Row(
        "contrastive",
        "SetFit-style contrastive stage (0.5 pass of anchors, lr 5e-5) before fine-tuning",
        {"contrastive_epochs": 0.5},
    ),
    Row("mlp-head", "MLP head (mean pooling, 384-384-77, dropout 0.1)", {"head": "mlp"}),
    Row("llrd", "layer-wise LR decay 0.8 (encoder top layer at 1e-4)", {"layer_lr_decay": 0.8}),
    Row(
        "mlm", "domain-adaptive MLM (1 pass over the training texts) before fine-tuning", {"mlm_epochs": 1.0}
    ),
    Row("freeze", "encoder frozen for epoch 1 (head only), then unfrozen", {"freeze_encoder_epochs": 1}),
    Row(
        "distill",
        "student (baseline config) on the averaged soft labels of the baseline, mean-head and "
        "contrastive rows' models (alpha 0.5, T 2)",
        {"distill_alpha": 0.5, "distill_temperature": 2.0},
        teachers_from=("baseline", "mean-head", "contrastive"),
    ),
)

SETS: dict[str, ExperimentSet] = {
    "ablation": ExperimentSet(
        "reduced budget: 2 epochs per row (same for all rows), no early stopping, full training split",
        {**BASELINE, "epochs": 2, "early_stopping_patience": 0},
        _STRATEGY_ROWS,
    ),
    "full": ExperimentSet(
        "full budget (5 epochs, early stopping 2)", {**BASELINE, "epochs": 5}, _STRATEGY_ROWS
    ),
    # Candidates for the default: the best strategy of the ablation (mlp head) at budgets that keep
    # the fine-tune under 10 minutes on 2 cores, with and without frozen word embeddings. The
    # second row is the current default configuration.
    "budget": ExperimentSet(
        "candidates for the default: mlp head at budgets that fit 10 minutes on 2 cores",
        {"head": "mlp"},
        (
            Row("mlp-4ep", "MLP head, 4 epochs", {"epochs": 4, "freeze_embeddings": False}),
            Row(
                "mlp-4ep-frozen-emb",
                "MLP head, 4 epochs, word embeddings frozen",
                {"epochs": 4, "freeze_embeddings": True},
            ),
        ),
    ),
    # Honest selection of the default (issue #13), at the default's own budget (4 epochs, early
    # stopping 2): the levers on noisy tickets, ranked on the validation split by the mean of
    # the clean and the noisy (pool "select") macro-F1, both goals of the issue; the test split
    # is scored once, for the winner, by `make train`. The head, the head LR and the frozen
    # word embeddings were already chosen on validation (docs/training.md).
    "selection": ExperimentSet(
        "the default's noise levers at the default's budget (4 epochs, early stopping 2)",
        {},
        (
            *_two_seeds(
                "augmentation-0.15-train-pool",
                "the previous default: augmentation 0.15 from pool train",
                {"noise_pools": ["train"]},
            ),
            *_two_seeds("default", "the default: augmentation 0.15 from pools train, dev and augment"),
            *_two_seeds(
                "augmentation-0.3-three-pools",
                "noisy augmentation 0.3 from pools train, dev and augment",
                {"noisy_augmentation": 0.3},
            ),
            Row("default-128", "the default at 128 tokens", {"max_length": 128}),
            # The encoder's learning rate, never validated for this default (its validation
            # curve still rises in the last epoch): higher rates at the same budget.
            *_two_seeds(
                "lr-1.5e-4", "encoder learning rate 1.5e-4 (default 1e-4)", {"learning_rate": 1.5e-4}
            ),
            *_two_seeds("lr-2e-4", "encoder learning rate 2e-4 (default 1e-4)", {"learning_rate": 2e-4}),
        ),
        rank_by="mean",
    ),
    # Whether noise augmentation helps *your* data (issue #20: the noise and its 0.15 share were
    # chosen on Banking77): the auto recipe (noise off) against domain-neutral noise at two
    # shares, ranked by the mean of the clean and the (neutral-)noisy validation macro-F1.
    # `make experiment SET=noise TICKETS=my.csv TEXT=body LABEL=queue`; a share that wins goes
    # into a preset file ([train] noisy_augmentation, noise_context = "neutral").
    "noise": ExperimentSet(
        "the auto recipe on this data, without and with domain-neutral noise augmentation",
        {},
        (
            Row("auto", "the auto recipe: no noise augmentation"),
            Row(
                "neutral-noise-0.15",
                "domain-neutral noise on 15 % of the rows each epoch",
                {"noisy_augmentation": 0.15, "noise_context": "neutral"},
            ),
            Row(
                "neutral-noise-0.3",
                "domain-neutral noise on 30 % of the rows each epoch",
                {"noisy_augmentation": 0.3, "noise_context": "neutral"},
            ),
        ),
        rank_by="mean",
        recipe="auto",
        noise_context="neutral",
    ),
    "smoke": ExperimentSet(
        "tiny check of the command (tests)",
        {**BASELINE, "epochs": 1, "early_stopping_patience": 0},
        (_STRATEGY_ROWS[0], _STRATEGY_ROWS[1], _STRATEGY_ROWS[2]),
    ),
}


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    from training.data import DEFAULT_DATA, DEFAULT_LABEL_COLUMN, DEFAULT_TEXT_COLUMN

    parser.add_argument("--set", default="ablation", help=f"one of {sorted(SETS)}")
    parser.add_argument("--rows", default="", help="comma-separated subset of the set's rows, in order")
    parser.add_argument("--output", type=Path, default=None, help="default artifacts/experiments/<set>")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="used to (re)build the split")
    parser.add_argument("--text-column", default=DEFAULT_TEXT_COLUMN)
    parser.add_argument("--label-column", default=DEFAULT_LABEL_COLUMN)
    parser.add_argument("--splits-dir", type=Path, default=Path("artifacts/splits"))
    parser.add_argument("--split-seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=None, help="override the set's epochs")
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--force", action="store_true", help="retrain rows that already have a result")


def _row_config(row: Row, exp: ExperimentSet, args: argparse.Namespace, out: Path, splits=None):
    from training.config import DEFAULT_BASE_MODEL, TrainConfig

    values: dict[str, Any] = {**exp.base, **row.overrides}
    for name in ("epochs", "base_model", "batch_size", "max_length"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    values["threads"] = args.threads
    if row.teachers_from:
        teachers = [out / name / "work" / "hf_model" for name in row.teachers_from]
        missing = [str(t) for t in teachers if not (t / "config.json").is_file()]
        if missing:
            raise FileNotFoundError(
                f"row {row.name}: teacher models missing (run those rows first): {missing}"
            )
        values["distill_teachers"] = [str(t) for t in teachers]
    if values.get("freeze_encoder_epochs", 0) >= values.get("epochs", TrainConfig.epochs):
        values["freeze_encoder_epochs"] = 0
    base_model = values.pop("base_model", DEFAULT_BASE_MODEL)
    if exp.recipe == "auto":
        from training.recipe import load_preset, profile_training_data, resolve_recipe

        profile = profile_training_data(splits.train, base_model, TrainConfig().preprocessing)
        return resolve_recipe(load_preset("auto"), base_model, values, profile).config
    return TrainConfig.for_base_model(base_model, **values)


def run_row(row: Row, exp: ExperimentSet, args: argparse.Namespace, splits, out: Path) -> dict[str, Any]:
    from training.evaluate import evaluate_artifact
    from training.export import export_artifact
    from training.noise import noisy_variant
    from training.train import train
    from triage_core.artifact import MODEL_FILE
    from triage_core.inference import ArtifactClassifier

    config = _row_config(row, exp, args, out, splits)
    row_dir = out / row.name
    labels = splits.train.label_names
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    result = train(config, splits.train, splits.validation, row_dir / "work", labels=labels)
    load_after = os.getloadavg()[0]
    validation = splits.validation
    artifact = export_artifact(
        result.model_dir,
        row_dir / "model",
        labels=labels,
        max_length=config.max_length,
        preprocessing=config.preprocessing,
        scoring=config.scoring,
        base_model=config.base_model,
        parity_texts=validation.texts,
        parity_labels=validation.labels,
    )
    export_seconds = round(time.perf_counter() - t0 - result.train_seconds, 1)
    # Rows are compared on the validation split only (the test split is scored once, by the
    # default's `make train`): the served int8 model on the clean tickets and on the same
    # tickets wrapped in the "select" noise pool (the held-out "eval" pool is kept for the test).
    classifier = ArtifactClassifier(artifact)
    clean = evaluate_artifact(artifact, validation.texts, validation.labels, classifier=classifier)
    context = None if exp.noise_context == "neutral" else exp.noise_context
    noisy_texts = noisy_variant(validation.texts, seed=NOISY_SEED, pool=SELECTION_NOISE_POOL, context=context)
    noisy = evaluate_artifact(artifact, noisy_texts, validation.labels, classifier=classifier)
    record = {
        "name": row.name,
        "what": row.what,
        "overrides": {k: v for k, v in config.to_dict().items() if k in {**exp.base, **row.overrides}}
        | ({"distill_teachers": list(row.teachers_from)} if row.teachers_from else {}),
        "epochs": config.epochs,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "val_macro_f1_torch": round(result.best_val_macro_f1, 4),
        "val_macro_f1": round(clean["macro_f1"], 4),
        "val_accuracy": round(clean["accuracy"], 4),
        "val_noisy_macro_f1": round(noisy["macro_f1"], 4),
        "val_mean_macro_f1": round((clean["macro_f1"] + noisy["macro_f1"]) / 2, 4),
        "noisy_gap": round(noisy["macro_f1"] - clean["macro_f1"], 4),
        "train_seconds": round(result.train_seconds, 1),
        "loadavg_start_end": [round(load_before, 2), round(load_after, 2)],
        "export_seconds": export_seconds,
        "stages": result.stages,
        "served_mb": round((artifact / MODEL_FILE).stat().st_size / 1e6, 1),
        "scoring": config.scoring,
        "validation_rows": len(validation.texts),
        "config": config.to_dict(),
    }
    (row_dir / "result.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return record


def _rank_key(exp: ExperimentSet):
    if exp.rank_by == "mean":
        return lambda r: -(r["val_macro_f1"] + r["val_noisy_macro_f1"]) / 2
    return lambda r: -r["val_macro_f1"]


def format_markdown(set_name: str, exp: ExperimentSet, rows: list[dict[str, Any]]) -> str:
    rank = (
        "mean of the clean and the noisy validation macro-F1"
        if exp.rank_by == "mean"
        else "validation macro-F1"
    )
    lines = [
        f"Experiment set `{set_name}`: {exp.description}.",
        "Served int8 ONNX model on the validation split (the test split is not used to choose); "
        f"noisy = the same tickets as e-mails/chats (noise pool `{SELECTION_NOISE_POOL}`). "
        f"Rank: {rank}.",
        "",
        "| rank | row | what | val macro-F1 | val noisy macro-F1 | mean | noisy − clean | train time (s) "
        "| served MB |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for place, r in enumerate(sorted(rows, key=_rank_key(exp)), start=1):
        mean = (r["val_macro_f1"] + r["val_noisy_macro_f1"]) / 2
        lines.append(
            f"| {place} | {r['name']} | {r['what']} | {r['val_macro_f1']:.4f} | "
            f"{r['val_noisy_macro_f1']:.4f} | {mean:.4f} | {100 * r['noisy_gap']:+.1f} pt | "
            f"{r['train_seconds']:.0f} | {r['served_mb']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def run_experiment(args: argparse.Namespace) -> dict[str, Any]:
    from training.config import TrainConfig
    from training.data import DataError, load_model_inputs, load_or_create_splits

    if args.set not in SETS:
        raise SystemExit(f"unknown experiment set {args.set!r}; choose one of {sorted(SETS)}")
    exp = SETS[args.set]
    wanted = [n.strip() for n in args.rows.split(",") if n.strip()]
    names = [row.name for row in exp.rows]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise SystemExit(f"unknown row(s) {unknown} in set {args.set}; rows: {names}")
    from training.config import ModelSourceError, check_base_model

    if args.base_model:
        try:
            check_base_model(args.base_model)
        except ModelSourceError as exc:
            raise SystemExit(str(exc)) from None
    out = args.output or Path("artifacts/experiments") / args.set
    out.mkdir(parents=True, exist_ok=True)
    try:
        dataset = load_model_inputs(
            args.data, args.text_column, args.label_column, TrainConfig().preprocessing
        )
        splits = load_or_create_splits(dataset, args.splits_dir, 0.1, 0.1, args.split_seed)
    except DataError as exc:
        raise SystemExit(f"data error: {exc}") from None

    handler = logging.FileHandler(out / "experiment.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        for row in exp.rows:
            if wanted and row.name not in wanted:
                continue
            if (out / row.name / "result.json").is_file() and not args.force:
                log.info("row %s: re-using %s", row.name, out / row.name / "result.json")
                continue
            log.info("row %s: %s", row.name, row.what)
            record = run_row(row, exp, args, splits, out)
            log.info(
                "row %s: validation %.4f, noisy validation %.4f, %.0f s",
                row.name,
                record["val_macro_f1"],
                record["val_noisy_macro_f1"],
                record["train_seconds"],
            )
            _write_table(args.set, exp, out)
        return _write_table(args.set, exp, out)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _write_table(set_name: str, exp: ExperimentSet, out: Path) -> dict[str, Any]:
    rows = [
        json.loads((out / row.name / "result.json").read_text("utf-8"))
        for row in exp.rows
        if (out / row.name / "result.json").is_file()
    ]
    table = {"set": set_name, "description": exp.description, "rows": rows}
    (out / "results.json").write_text(json.dumps(table, indent=2, default=str) + "\n", encoding="utf-8")
    markdown = format_markdown(set_name, exp, rows)
    (out / "results.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return table
