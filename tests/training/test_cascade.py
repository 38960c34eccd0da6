"""The confidence cascade (issue #23): an ensemble artifact's ``linear.cascade_bar``.

A ticket whose top linear score reaches the bar is served the linear model's scores and never
reaches ONNX Runtime; every other ticket gets the ensemble. Checked on a real tiny ensemble
artifact (tiny MiniLM-vocabulary BERT + a TF-IDF model fit here by scikit-learn) against an
independent computation: scikit-learn's own probabilities and the transformer-only artifact's
scores, combined by the documented rule. The artifact serves its fp32 ONNX model, whose scores do
not depend on the batch (int8 dynamic quantization's do, a little), so rows compare exactly.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from tests.container.serverproc import start_server, stop_server
from tests.training.test_baseline import FILLER, keyword_tickets
from training.baseline import BaselineConfig, fit_baseline, probabilities, ship_linear
from training.cascade import REPORT_FILE, SplitScores, cascade_scores, choose_bar, store_bar
from training.export import fp32_onnx_path
from training.recipe import CascadePolicy, PresetError, ReviewPolicy, load_preset, resolve_recipe
from triage_core.artifact import MANIFEST_FILE, MODEL_FILE, ArtifactError, load_manifest, write_manifest
from triage_core.inference import ArtifactClassifier
from triage_core.preprocessing import PreprocessConfig, preprocess_batch

WEIGHT = 0.3


def _pool() -> list[str]:
    """Tickets the linear model is sure of (a keyword), unsure of (filler only), and long ones
    (several keyword tickets joined: more than the artifact's 32 tokens, scored in windows)."""
    sure = keyword_tickets(4, 7).texts
    unsure = [" ".join(FILLER[i : i + 6]) for i in range(0, 9)]
    long = [" ".join(keyword_tickets(3, 8 + i).texts[i::4]) for i in range(4)]
    return [*sure, *unsure, *long]


POOL = _pool()


@pytest.fixture(scope="module")
def built(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The transformer-only artifact (fp32 model, windows for long tickets), the ensemble built
    from it, and the fitted scikit-learn model."""
    root = tmp_path_factory.mktemp("cascade")
    transformer = Path(shutil.copytree(tiny_artifact, root / "transformer"))
    shutil.copyfile(fp32_onnx_path(tiny_artifact), transformer / MODEL_FILE)  # batch-independent scores
    manifest = load_manifest(transformer)
    windows = {"strategy": "windows", "pooling": "mean"}
    write_manifest(transformer, manifest.model_validate({**manifest.model_dump(), "long_text": windows}))
    train = keyword_tickets(20, 4)
    model = fit_baseline(
        preprocess_batch(train.texts, PreprocessConfig()), train.labels, manifest.labels, BaselineConfig()
    )
    ensemble = Path(shutil.copytree(transformer, root / "ensemble"))
    ship_linear(model, ensemble, "ensemble", WEIGHT, BaselineConfig())
    return {"transformer": transformer, "ensemble": ensemble, "model": model, "root": root}


def with_bar(directory: Path, bar: float | None, out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(directory, out)
    store_bar(out, bar)
    return out


def expected_scores(built: dict, texts: list[str], bar: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The rule, computed independently: scikit-learn's probabilities, the transformer-only
    artifact's scores, ``where(linear_max >= bar, linear, weight * linear + (1 - weight) * onnx)``.
    Also returns the linear top scores."""
    labels = load_manifest(built["ensemble"]).labels
    linear = probabilities(built["model"], preprocess_batch(texts, PreprocessConfig()), labels)
    onnx = ArtifactClassifier(built["transformer"]).predict_scores(texts)
    ensemble = WEIGHT * linear + (1 - WEIGHT) * onnx
    if bar is None:
        return ensemble, linear.max(axis=1)
    return np.where((linear.max(axis=1) >= bar)[:, None], linear, ensemble), linear.max(axis=1)


class CountingSession:
    """The real ONNX Runtime session, counting the runs and the rows it is given."""

    def __init__(self, session):
        self.session = session
        self.runs = 0
        self.rows = 0

    def run(self, names, feed):
        self.runs += 1
        self.rows += len(next(iter(feed.values())))
        return self.session.run(names, feed)


class CountingTokenizer:
    """The artifact's real ``TicketTokenizer`` (the compiled WordPiece and ``tokenizers``),
    counting the texts it encodes."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.texts: list[str] = []

    def encode(self, texts):
        self.texts.extend(texts)
        return self.tokenizer.encode(texts)

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)


# --- the rule, row for row -------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    bar=st.floats(0.0, 1.0),
    picks=st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=24),
    batch_size=st.integers(1, 8),
)
def test_cascade_scores_are_the_rule_row_for_row(
    built: dict, tmp_path: Path, bar: float, picks: list[int], batch_size: int
) -> None:
    texts = [POOL[i] for i in picks]
    expected, top = expected_scores(built, texts, bar)
    # a bar within float error of a ticket's top score could go either way in float32: not the rule's business
    if np.any(np.abs(top - bar) < 1e-5):
        return
    artifact = with_bar(built["ensemble"], bar, tmp_path / "bar")
    got = ArtifactClassifier(artifact).predict_scores(texts, batch_size=batch_size)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_no_bar_is_todays_ensemble(built: dict) -> None:
    expected, _ = expected_scores(built, POOL, None)
    np.testing.assert_allclose(
        ArtifactClassifier(built["ensemble"]).predict_scores(POOL), expected, atol=1e-5
    )


# --- settled tickets cost no ONNX Runtime and no tokenizer ----------------------------------------
@pytest.mark.parametrize("bar", [None, 0.0, 0.6, 1.0])
def test_settled_tickets_never_reach_onnx_runtime(built: dict, tmp_path: Path, bar: float | None) -> None:
    classifier = ArtifactClassifier(with_bar(built["ensemble"], bar, tmp_path / "bar"))
    session = classifier.session = CountingSession(classifier.session)
    tokenizer = classifier.tokenizer = CountingTokenizer(classifier.tokenizer)
    runner_session = CountingSession(classifier._open_session(1))
    _, top = expected_scores(built, POOL, bar)
    unsettled = [t for t, s in zip(POOL, top, strict=True) if bar is None or s < bar]
    if bar == 0.6:  # the pool mixes both
        assert 0 < len(unsettled) < len(POOL)

    items = classifier.encode(classifier.clean(POOL))
    assert tokenizer.texts == classifier.clean(unsettled)  # only the unsettled are tokenized
    assert sum(1 for item in items if len(item.ids) == 0) == len(POOL) - len(unsettled)
    classifier.predict_scores(POOL, batch_size=4)
    # one window row per window of a long unsettled ticket, one row per other unsettled ticket
    windows = sum(len(getattr(item, "parts", None) or (item,)) for item in items if len(item.ids))
    assert session.rows == windows
    settled_only = [item for item in items if len(item.ids) == 0]
    runs_before = session.runs
    if settled_only:  # a batch of settled tickets only: no ONNX Runtime call at all
        scores = classifier.run(settled_only)
        assert session.runs == runs_before and scores.shape == (len(settled_only), len(classifier.labels))
    # the server's second session (runner) obeys the same rule
    from functools import partial

    partial(classifier._score, runner_session)(items)
    assert runner_session.rows == windows and (runner_session.runs == 0) == (windows == 0)


# --- the server returns what the classifier computes ---------------------------------------------
def test_the_server_serves_the_cascade(built: dict, tmp_path: Path) -> None:
    artifact = with_bar(built["ensemble"], 0.6, tmp_path / "bar")
    texts = [*POOL, *POOL[::3]]
    expected = ArtifactClassifier(artifact).predict_scores(texts)
    _, top = expected_scores(built, texts, 0.6)
    assert 0 < (top >= 0.6).sum() < len(texts)
    labels = load_manifest(artifact).labels
    body = b"".join(orjson.dumps({"id": f"t{i}", "text": t}) + b"\n" for i, t in enumerate(texts))
    # a small token budget: batches are cut by tokens, settled tickets (no tokens) ride along
    server = start_server(artifact, tmp_path / "server.log", TRIAGE_MAX_BATCH_TOKENS="512")
    try:
        resp = server.invoke(body, "application/jsonlines", "application/jsonlines", **{"X-Top-K": "1"})
        singles = [
            server.invoke(orjson.dumps({"inputs": t}), "application/json").json()[0] for t in texts[:4]
        ]
    finally:
        stop_server(server)
    assert resp.status == 200, resp.body
    lines = resp.jsonl()
    assert [line["id"] for line in lines] == [f"t{i}" for i in range(len(texts))]
    assert [line["label"] for line in lines] == [labels[i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose([line["score"] for line in lines], expected.max(axis=1), atol=1e-5)
    assert [s["label"] for s in singles] == [labels[i] for i in expected[:4].argmax(axis=1)]
    # the chaos checker's own scoring of the artifact (its manifest's bar) agrees with the server
    from chaos.checker import ReferenceScorer, check_labels

    by_id = {f"t{i}": t for i, t in enumerate(texts)}
    assert check_labels(by_id, lines, ReferenceScorer(artifact)) == []


# --- the manifest ---------------------------------------------------------------------------------
def test_an_old_manifest_without_the_bar_loads_unchanged(built: dict, tmp_path: Path) -> None:
    old = Path(shutil.copytree(built["ensemble"], tmp_path / "old"))
    data = json.loads((old / MANIFEST_FILE).read_text("utf-8"))
    data["linear"].pop("cascade_bar", None)
    (old / MANIFEST_FILE).write_text(json.dumps(data), encoding="utf-8")
    assert load_manifest(old).linear.cascade_bar is None
    expected, _ = expected_scores(built, POOL, None)
    np.testing.assert_allclose(ArtifactClassifier(old).predict_scores(POOL), expected, atol=1e-5)


def test_a_bar_needs_an_ensemble(built: dict, tmp_path: Path) -> None:
    linear_only = Path(shutil.copytree(built["ensemble"], tmp_path / "linear"))
    data = json.loads((linear_only / MANIFEST_FILE).read_text("utf-8"))
    data["model"], data["linear"]["cascade_bar"] = "linear", 0.5
    (linear_only / MANIFEST_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ArtifactError, match="cascade_bar needs model 'ensemble'"):
        load_manifest(linear_only)
    data["model"], data["linear"]["cascade_bar"] = "ensemble", 1.5
    (linear_only / MANIFEST_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ArtifactError, match="less than or equal to 1"):
        load_manifest(linear_only)


# --- choosing the bar -----------------------------------------------------------------------------
def constructed(seed: int, wrong_band: tuple[float, float], n: int = 600) -> SplitScores:
    """Three labels; the ensemble is right on every ticket; the linear model is right on a ticket
    unless its top score falls in ``wrong_band``, where it is wrong."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    top = rng.uniform(0.34, 1.0, n)
    linear = np.zeros((n, 3))
    for i in range(n):
        label = (y[i] + 1) % 3 if wrong_band[0] <= top[i] < wrong_band[1] else y[i]
        linear[i] = (1 - top[i]) / 2
        linear[i, label] = top[i]
    ensemble = np.full((n, 3), 0.1)
    ensemble[np.arange(n), y] = 0.8
    return SplitScores(y, linear, ensemble)


def rule_says(splits: dict[str, SplitScores], bars: tuple[float, ...], allowed: float) -> float | None:
    """The selection rule, with scikit-learn's macro-F1: the lowest bar losing at most ``allowed``
    on every split."""
    for bar in sorted(bars):
        ok = True
        for s in splits.values():
            served = np.where(s.linear.max(1) >= bar, s.linear.argmax(1), s.ensemble.argmax(1))
            ok &= (
                f1_score(s.y, served, average="macro") - f1_score(s.y, s.ensemble.argmax(1), average="macro")
                >= -allowed
            )
        if ok:
            return bar
    return None


@pytest.mark.parametrize(
    ("clean_band", "noisy_band", "policy"),
    [
        ((0.6, 0.62), (0.5, 0.52), CascadePolicy()),
        ((0.6, 0.62), (0.7, 0.75), CascadePolicy()),  # the noisy split decides
        ((0.6, 0.62), (0.7, 0.75), CascadePolicy(max_f1_loss=0.05, margin=0.0)),  # a looser budget
        ((0.34, 1.0), (0.34, 1.0), CascadePolicy()),  # the linear model is always wrong: no bar
    ],
)
def test_the_bar_is_the_lowest_that_keeps_clean_and_noisy_quality(
    clean_band: tuple[float, float], noisy_band: tuple[float, float], policy: CascadePolicy
) -> None:
    splits = {"clean": constructed(1, clean_band), "noisy": constructed(2, noisy_band)}
    bars = (0.4, 0.5, 0.6, 0.65, 0.7, 0.8, 0.9)
    report = choose_bar(splits, policy, bars)
    assert report["bar"] == rule_says(splits, bars, policy.max_f1_loss - policy.margin)
    row = {r["bar"]: r for r in report["candidates"]}
    for bar in bars:  # the table: the share the linear model settles, per split
        for name, s in splits.items():
            assert row[bar][name]["skip_share"] == pytest.approx((s.linear.max(1) >= bar).mean(), abs=1e-4)
    if clean_band == (0.34, 1.0):
        assert report["bar"] is None


def peaked_ensemble(seed: int, n: int = 800) -> SplitScores:
    """Three labels. The ensemble is right on 97 % of the tickets with top score 0.95 and wrong on
    3 % with 0.85; the linear model is right wherever the ensemble is, with top scores spread over
    0.5-1.0, and has its lowest score (0.34) where the ensemble is wrong (never settled). A
    cascade loses no F1 at any bar, but the tickets it settles under 0.85 fall below the
    ensemble's wrong ones: a 98 % review target sends them to review."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    wrong = rng.random(n) < 0.03
    ensemble = np.full((n, 3), 0.025)
    linear = np.zeros((n, 3))
    for i in range(n):
        label = (y[i] + 1) % 3 if wrong[i] else y[i]
        ensemble[i, label] = 0.85 if wrong[i] else 0.95
        top = 0.34 if wrong[i] else rng.uniform(0.5, 1.0)
        linear[i] = (1 - top) / 2
        linear[i, y[i] if not wrong[i] else label] = top
    return SplitScores(y, linear, ensemble)


def share_to_review(y: np.ndarray, scores: np.ndarray, target: float) -> float:
    """Brute force: the largest set of tickets above a score threshold that is right at least
    ``target`` of the time; the rest go to review."""
    top, correct = scores.max(1), scores.argmax(1) == y
    best = 1.0
    for t in np.unique(top):
        accepted = top >= t
        if correct[accepted].mean() >= target:
            best = min(best, 1 - accepted.mean())
    return best


def test_the_bar_keeps_the_review_queue_as_the_ensemble_s() -> None:
    splits = {"clean": peaked_ensemble(3), "noisy": peaked_ensemble(4)}
    bars = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
    review = ReviewPolicy(target_accuracy=0.98)
    policy = CascadePolicy(max_review_increase=0.01)
    clean = splits["clean"]
    base = share_to_review(clean.y, clean.ensemble, 0.98)
    shares = {
        bar: share_to_review(clean.y, cascade_scores(clean.linear, clean.ensemble, bar), 0.98) for bar in bars
    }
    expected = min(bar for bar in bars if shares[bar] - base <= 0.01)
    assert expected > min(bars)  # the premise: low bars fill the review queue
    report = choose_bar(splits, policy, bars, review=review)
    assert report["bar"] == expected
    assert {r["bar"]: r["review_share"] for r in report["candidates"]} == pytest.approx(shares, abs=1e-4)
    assert report["ensemble_review_share"] == pytest.approx(base, abs=1e-4)
    # without the condition (or without a review policy) the F1 rule alone takes the lowest bar
    assert choose_bar(splits, CascadePolicy(max_review_increase=1.0), bars, review=review)["bar"] == min(bars)
    assert choose_bar(splits, policy, bars)["bar"] == min(bars)


def test_the_cascade_command_on_a_trained_artifact(built: dict, tmp_path: Path) -> None:
    """``python -m training cascade``: the bar chosen on validation lands in the manifest and
    the report; the review threshold is chosen again on the cascaded scores."""
    from training.cascade import main

    artifact = with_bar(built["ensemble"], None, tmp_path / "model")
    manifest = load_manifest(artifact)
    write_manifest(
        artifact,
        manifest.model_validate(
            {**manifest.model_dump(), "review_threshold": 0.5, "review_target_accuracy": 0.9}
        ),
    )
    splits = tmp_path / "splits"
    splits.mkdir()
    validation = keyword_tickets(12, 9)
    with (splits / "validation.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        writer.writerows(zip(validation.texts, validation.labels, strict=True))
    assert (
        main(["--model", str(artifact), "--splits-dir", str(splits), "--reports-dir", str(tmp_path / "r")])
        == 0
    )
    report = json.loads((tmp_path / "r" / REPORT_FILE).read_text("utf-8"))
    after = load_manifest(artifact)
    assert after.linear.cascade_bar == report["bar"]
    assert report["bar"] is not None  # keyword tickets: the linear model settles many
    assert after.review_threshold == report["review_threshold"]["threshold"]
    assert {"clean", "noisy"} <= set(report["candidates"][0])
    off = with_bar(built["ensemble"], 0.5, tmp_path / "off")
    assert main(["--model", str(off), "--splits-dir", str(splits), "--cascade", "off"]) == 0
    assert load_manifest(off).linear.cascade_bar is None


# --- the preset key -------------------------------------------------------------------------------
def test_the_cascade_policy_comes_from_the_preset_and_the_command_line(tmp_path: Path) -> None:
    from training.__main__ import build_parser, run_from_args

    assert resolve_recipe(load_preset("banking77"), None, {}).cascade == CascadePolicy()
    path = tmp_path / "mine.toml"
    path.write_text('base = "banking77"\n[cascade]\nmax_f1_loss = 0.01\n', encoding="utf-8")
    recipe = resolve_recipe(load_preset(str(path)), None, {}, cascade_given={"enabled": False})
    assert recipe.cascade == CascadePolicy(enabled=False, max_f1_loss=0.01)
    bad = tmp_path / "bad.toml"
    bad.write_text("[cascade]\nbar = 0.5\n", encoding="utf-8")
    with pytest.raises(PresetError, match="unknown \\[cascade\\] key"):
        load_preset(str(bad))
    bad.write_text("[cascade]\nmargin = 0.01\nmax_f1_loss = 0.005\n", encoding="utf-8")
    with pytest.raises(PresetError, match="margin <= max_f1_loss"):
        resolve_recipe(load_preset(str(bad)), None, {})
    run = run_from_args(build_parser().parse_args(["train", "--cascade", "off"]), env={})
    assert run.cascade == {"enabled": False}
    assert run_from_args(build_parser().parse_args(["train"]), env={}).cascade == {}


def test_make_train_reference_turns_the_cascade_off() -> None:
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text("utf-8")
    recipe = makefile.split("\ntrain-reference:")[1].split("\n\n")[0]
    assert "--preset banking77 --cascade off" in recipe
