"""The linear baseline in every training run: TF-IDF + logistic regression (scikit-learn).

Word 1-2 grams and character 3-5 grams, sublinear tf, each L2-normalised, one multinomial
logistic regression over both: the strong classic baseline for text classification. It is fit
on the same preprocessed training split as the transformer (the artifact's
:class:`~triage_core.preprocessing.PreprocessConfig`), scored on the same validation and test
tickets with the same report function (:func:`training.evaluate.classification_report`), and
the training report shows the margin (transformer minus baseline).

What ships is chosen on the validation split (:func:`choose_model`): the transformer, the linear
model, or their probabilities averaged with a weight chosen there too. Shipping the linear
model (alone or in the average) writes ``linear.npz`` into the artifact and sets the manifest's
``model``; :mod:`triage_core.linear` computes its probabilities with numpy in the server and in
evaluation, so what is measured is what is served.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from triage_core.artifact import edited_manifest, load_manifest
from triage_core.linear import LINEAR_FILE, LinearSpec
from triage_core.preprocessing import PreprocessConfig, preprocess_batch

log = logging.getLogger(__name__)

REPORT_FILE = "baseline.json"
# candidate weights of the linear model's probabilities in the shipped average (0: transformer)
WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 11))


@dataclass(frozen=True)
class BaselineConfig:
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)
    min_df: int = 2  # an n-gram seen in one training ticket only says nothing about a label
    C: float = 10.0  # inverse regularisation; 1.0 (scikit-learn's default) underfits tf-idf text
    max_iter: int = 2000

    def spec(self, weight: float = 1.0) -> LinearSpec:
        return LinearSpec(word_ngrams=self.word_ngrams, char_ngrams=self.char_ngrams, weight=weight)


def fit_baseline(texts: list[str], labels: list[str], label_names: list[str], config: BaselineConfig):
    """A fitted ``Pipeline(FeatureUnion(word, char), LogisticRegression)`` on cleaned texts.
    :func:`probabilities` and :func:`save_linear` put its columns in ``label_names``' order; a
    label without a training ticket gets probability 0."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    unknown = sorted(set(labels) - set(label_names))
    if unknown:
        raise ValueError(f"training labels the model does not have: {unknown[:5]}")
    common = {"sublinear_tf": True, "lowercase": True, "min_df": config.min_df, "dtype": np.float64}
    model = Pipeline(
        [
            (
                "tfidf",
                FeatureUnion(
                    [
                        ("word", TfidfVectorizer(analyzer="word", ngram_range=config.word_ngrams, **common)),
                        ("char", TfidfVectorizer(analyzer="char", ngram_range=config.char_ngrams, **common)),
                    ]
                ),
            ),
            ("lr", LogisticRegression(C=config.C, max_iter=config.max_iter)),
        ]
    )
    model.fit(texts, labels)
    return model


# logit of a label the model never saw: exp() of it is 0 in float32, as its probability is
ABSENT_LOGIT = -1e4


def _columns(model, label_names: list[str]) -> list[int | None]:
    classes = {label: i for i, label in enumerate(model.classes_)}
    return [classes.get(label) for label in label_names]


def probabilities(model, texts: list[str], label_names: list[str]) -> np.ndarray:
    """scikit-learn's ``predict_proba`` on cleaned texts, columns in ``label_names``' order."""
    proba = model.predict_proba(texts)
    out = np.zeros((len(texts), len(label_names)), dtype=np.float32)
    for j, column in enumerate(_columns(model, label_names)):
        if column is not None:
            out[:, j] = proba[:, column]
    return out


def save_linear(model, path: Path, label_names: list[str]) -> Path:
    """Write the fitted pipeline as ``linear.npz`` (format: :mod:`triage_core.linear`), its
    columns in ``label_names``' order (the artifact's)."""
    union = model.named_steps["tfidf"]
    word, char = (dict(union.transformer_list)[name] for name in ("word", "char"))
    lr = model.named_steps["lr"]
    coef, intercept = lr.coef_, lr.intercept_
    if coef.shape[0] == 1:  # two labels: one logit z, p = [sigmoid(-z), sigmoid(z)] = softmax([-z/2, z/2])
        coef, intercept = np.vstack((-coef / 2, coef / 2)), np.concatenate((-intercept / 2, intercept / 2))
    columns = _columns(model, label_names)
    coef = np.vstack([coef[c] if c is not None else np.zeros(coef.shape[1]) for c in columns])
    intercept = np.array([intercept[c] if c is not None else ABSENT_LOGIT for c in columns])

    def terms(vectorizer) -> np.ndarray:
        return np.asarray(vectorizer.get_feature_names_out(), dtype=str)

    np.savez_compressed(
        path,
        word_terms=terms(word),
        word_idf=word.idf_,
        char_terms=terms(char),
        char_idf=char.idf_,
        coef=np.ascontiguousarray(coef.T, dtype=np.float32),
        intercept=intercept.astype(np.float32),
    )
    return path


def choose_model(y: np.ndarray, transformer: np.ndarray, linear: np.ndarray, ensemble: bool = True):
    """On validation: the weight ``w`` of the linear model in ``w * linear + (1 - w) *
    transformer`` with the best macro-F1 (then accuracy); ties go to the transformer, then to
    a single model. Returns ``(model, weight, table)``."""
    from training.evaluate import classification_report

    n_labels = transformer.shape[1]
    names = [str(i) for i in range(n_labels)]
    weights = WEIGHTS if ensemble else (0.0, 1.0)
    order = sorted(weights, key=lambda w: (w not in (0.0, 1.0), w))  # 0, 1, then the mixtures
    table = []
    for w in order:
        report = classification_report(y, w * linear + (1 - w) * transformer, names)
        table.append({"weight": w, "macro_f1": report["macro_f1"], "accuracy": report["accuracy"]})
    best = max(table, key=lambda row: (round(row["macro_f1"], 6), round(row["accuracy"], 6)))
    weight = best["weight"]
    model = "transformer" if weight == 0.0 else "linear" if weight == 1.0 else "ensemble"
    return model, weight, sorted(table, key=lambda row: row["weight"])


def _headline(report: dict[str, Any]) -> dict[str, float]:
    return {"macro_f1": round(report["macro_f1"], 4), "accuracy": round(report["accuracy"], 4)}


def _margin(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: round(a[k] - b[k], 4) for k in a}


def run_baseline(
    artifact_dir: Path,
    train,
    validation,
    test,
    preprocessing: PreprocessConfig,
    reports_dir: Path | None = None,
    config: BaselineConfig | None = None,
    ship: bool = True,
) -> dict[str, Any]:
    """Fit the baseline, compare it with the artifact's transformer on validation and test,
    ship the winner on validation into ``artifact_dir``. Returns the report (also written to
    ``<reports_dir>/baseline.json``)."""
    from training.evaluate import classification_report
    from triage_core.inference import ArtifactClassifier

    config = config or BaselineConfig()
    artifact_dir = Path(artifact_dir)
    classifier = ArtifactClassifier(artifact_dir)
    labels = classifier.labels
    index = {label: i for i, label in enumerate(labels)}
    started = time.perf_counter()
    model = fit_baseline(preprocess_batch(train.texts, preprocessing), train.labels, labels, config)
    fit_seconds = time.perf_counter() - started

    reports: dict[str, dict[str, Any]] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name, split in (("validation", validation), ("test", test)):
        y = np.array([index[label] for label in split.labels])
        scores[name] = {
            "transformer": classifier.predict_scores(split.texts),
            "linear": probabilities(model, preprocess_batch(split.texts, preprocessing), labels),
        }
        reports[name] = {
            kind: _headline(classification_report(y, s, labels)) for kind, s in scores[name].items()
        }
    y_val = np.array([index[label] for label in validation.labels])
    # A one-vs-rest (sigmoid) transformer promises independent per-class scores: the linear
    # model's softmax probabilities cannot keep that promise, so it is reported, not shipped.
    softmax = classifier.manifest.scoring == "softmax"
    shipped, weight, table = choose_model(
        y_val, scores["validation"]["transformer"], scores["validation"]["linear"], softmax
    )
    if not softmax:
        shipped, weight = "transformer", 0.0
    report: dict[str, Any] = {
        "baseline": "TF-IDF (word + char n-grams, sublinear tf) + logistic regression, scikit-learn",
        "config": asdict(config),
        "fit_seconds": round(fit_seconds, 1),
        "validation": reports["validation"],
        "test": reports["test"],
        "margin": {  # transformer minus baseline
            split: _margin(reports[split]["transformer"], reports[split]["linear"])
            for split in ("validation", "test")
        },
        "transformer_wins_on_validation": reports["validation"]["transformer"]["macro_f1"]
        > reports["validation"]["linear"]["macro_f1"],
        "choice": {"model": shipped, "linear_weight": weight, "chosen_on": "validation", "candidates": table},
        **({} if softmax else {"not_shipped": "the transformer's scores are one-vs-rest sigmoids"}),
    }
    if weight not in (0.0, 1.0):
        y_test = np.array([index[label] for label in test.labels])
        mixed = weight * scores["test"]["linear"] + (1 - weight) * scores["test"]["transformer"]
        report["test"]["ensemble"] = _headline(classification_report(y_test, mixed, labels))
    margin = report["margin"]["validation"]
    log.info(
        "linear baseline (fit %.0f s): validation macro-F1 %.4f vs transformer %.4f (margin %+.4f); "
        "test margin %+.4f",
        fit_seconds,
        reports["validation"]["linear"]["macro_f1"],
        reports["validation"]["transformer"]["macro_f1"],
        margin["macro_f1"],
        report["margin"]["test"]["macro_f1"],
    )
    if not report["transformer_wins_on_validation"]:
        log.warning(
            "!!! THE TRANSFORMER DOES NOT BEAT THE LINEAR BASELINE on the validation split: macro-F1 "
            "%.4f vs %.4f (TF-IDF + logistic regression). Shipping: %s. Look at the data (size, "
            "length, labels) and the recipe before trusting the fine-tuned model. !!!",
            reports["validation"]["transformer"]["macro_f1"],
            reports["validation"]["linear"]["macro_f1"],
            shipped if shipped == "transformer" else f"{shipped} (linear weight {weight})",
        )
    if ship and shipped != "transformer":
        ship_linear(model, artifact_dir, shipped, weight, config)
        log.info("shipped model: %s (linear weight %.2f, chosen on validation)", shipped, weight)
    report["shipped"] = shipped if ship else "transformer"
    if reports_dir is not None:
        Path(reports_dir).mkdir(parents=True, exist_ok=True)
        (Path(reports_dir) / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def ship_linear(model, artifact_dir: Path, kind: str, weight: float, config: BaselineConfig) -> None:
    """Put the linear model into the artifact as ``kind`` ("linear" or "ensemble")."""
    with edited_manifest(artifact_dir) as manifest:
        save_linear(model, Path(artifact_dir) / LINEAR_FILE, manifest["labels"])
        manifest["model"] = kind
        manifest["linear"] = config.spec(weight).model_dump()
        if kind == "linear":
            manifest["scoring"] = "softmax"  # logistic regression's probabilities
    load_manifest(artifact_dir)
