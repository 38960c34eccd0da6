"""Load labelled tickets (CSV or JSON Lines) and split them reproducibly.

Nothing is dropped silently: every dropped or suspicious row is counted in the load report
(returned, logged and written next to the splits).

* Rows with an empty text or a missing label are dropped and counted.
* Exact duplicates (same text, same label) are dropped and counted: kept, they would inflate
  some classes and could land in both the training and the test split.
* Conflicting duplicates (same text, different labels) are kept and reported (with examples):
  they are a labelling question for a person, not for the loader. ``drop_conflicts=True``
  drops every copy instead.
* Labels with fewer than ``min_examples`` rows are an error: they cannot be split stratified.

The text may come from several fields: ``text_column="subject,body"`` joins the fields in that
order, a blank line apart, empty ones left out (:func:`triage_core.records.join_text_fields`,
what the server and the dispatcher do with ``TRIAGE_TEXT_FIELDS`` / ``triage:ticketFields`` set
to the same names), so the model trains on the text it is served.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from triage_core.preprocessing import PreprocessConfig

from triage_core.records import join_text_fields

log = logging.getLogger(__name__)

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "banking77" / "train.csv"
DEFAULT_TEXT_COLUMN = "text"
DEFAULT_LABEL_COLUMN = "category"
SPLIT_NAMES = ("train", "validation", "test")
SPLIT_INFO_FILE = "split_info.json"
_JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
_CSV_SUFFIXES = {".csv", ".tsv"}


class DataError(ValueError):
    """The ticket file cannot be used as training data; the message says why and what to do."""


@dataclass
class TicketDataset:
    """Labelled tickets after cleaning of the file; ``report`` says what was dropped and why."""

    texts: list[str]
    labels: list[str]
    text_column: str = DEFAULT_TEXT_COLUMN
    label_column: str = DEFAULT_LABEL_COLUMN
    report: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_names(self) -> list[str]:
        """Sorted label names: the model's label order."""
        return sorted(set(self.labels))

    def support(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))


# --- reading ---------------------------------------------------------------------------------
def _file_format(path: Path, file_format: str) -> str:
    if file_format != "auto":
        if file_format not in ("csv", "jsonl"):
            raise DataError(f"unknown format {file_format!r}: use csv or jsonl")
        return file_format
    suffix = path.suffix.lower()
    if suffix in _CSV_SUFFIXES:
        return "csv"
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    raise DataError(f"{path}: cannot tell the format from {suffix!r}; use a .csv or .jsonl file")


def _read_text(path: Path, encoding: str) -> str:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r} (try utf-8, utf-8-sig, latin-1, cp1252)") from None
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8") and raw.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"  # Excel writes a BOM; it must not end up in the first column name
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} is not valid {encoding} (byte {exc.start}, line {line}: {exc.reason}); "
            "pass the file's encoding, e.g. --encoding latin-1 or cp1252"
        ) from None


def text_fields(text_column: str) -> tuple[str, ...]:
    """``"subject,body"`` -> ``("subject", "body")``: the fields whose values make the text."""
    fields = tuple(name.strip() for name in text_column.split(","))
    if not all(fields) or len(set(fields)) != len(fields):
        raise DataError(f"invalid text column(s) {text_column!r}: name one column, or several with commas")
    return fields


def split_text_column(text_column: str) -> str:
    """The text column of the split files: the joined text of several fields is ``text``."""
    return DEFAULT_TEXT_COLUMN if "," in text_column else text_column


def _csv_rows(path: Path, content: str, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise DataError(f"{path} is empty: expected a header row with {columns[0]!r} and {columns[1]!r}")
    reader.fieldnames = header
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has columns {header}")
    return [{c: row.get(c) for c in columns} for row in reader]


def _jsonl_rows(path: Path, content: str, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object per line")
        seen.update(record)
        rows.append({c: record.get(c) for c in columns})
    missing = [c for c in columns if c not in seen]
    if rows and missing:
        raise DataError(f"{path}: missing field(s) {missing}; records have {sorted(seen)}")
    return rows


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else str(value).strip()


def load_tickets(
    path: str | Path = DEFAULT_DATA,
    text_column: str = DEFAULT_TEXT_COLUMN,
    label_column: str = DEFAULT_LABEL_COLUMN,
    encoding: str = "utf-8",
    file_format: str = "auto",
    min_examples: int = 2,
    drop_conflicts: bool = False,
) -> TicketDataset:
    """Read a CSV / JSON Lines file of labelled tickets. Raises :class:`DataError` on bad input."""
    path = Path(path)
    fmt = _file_format(path, file_format)
    content = _read_text(path, encoding)
    if not content.strip():
        raise DataError(f"{path} is empty")
    fields = text_fields(text_column)
    columns = (*fields, label_column)
    rows = _csv_rows(path, content, columns) if fmt == "csv" else _jsonl_rows(path, content, columns)
    if not rows:
        raise DataError(f"{path} has no data rows")

    empty_text = missing_label = 0
    labels_by_text: dict[str, list[str]] = defaultdict(list)
    order: list[tuple[str, str]] = []
    for row in rows:
        if len(fields) == 1:
            text = _as_text(row[text_column])
        else:
            text = join_text_fields(_as_text(row[name]) for name in fields)
        label = _as_text(row[label_column])
        if not text:
            empty_text += 1
            continue
        if not label:
            missing_label += 1
            continue
        labels_by_text[text].append(label)
        order.append((text, label))

    exact_duplicates = 0
    conflicts = {t: sorted(set(ls)) for t, ls in labels_by_text.items() if len(set(ls)) > 1}
    kept: set[tuple[str, str]] = set()
    texts: list[str] = []
    labels: list[str] = []
    conflict_rows_dropped = 0
    for text, label in order:
        if (text, label) in kept:
            exact_duplicates += 1
            continue
        kept.add((text, label))
        if drop_conflicts and text in conflicts:
            conflict_rows_dropped += 1
            continue
        texts.append(text)
        labels.append(label)
    if not texts:
        raise DataError(f"{path}: no usable rows ({empty_text} empty texts, {missing_label} missing labels)")

    support = Counter(labels)
    too_small = {label: n for label, n in sorted(support.items()) if n < min_examples}
    if too_small:
        raise DataError(
            f"{path}: {len(too_small)} label(s) have fewer than {min_examples} examples, which cannot be "
            f"split stratified: {too_small}. Add examples, merge them into another label or remove them."
        )
    if len(support) < 2:
        raise DataError(f"{path}: need at least 2 different labels, found {sorted(support)}")

    report: dict[str, Any] = {
        "source": str(path),
        "format": fmt,
        "encoding": encoding,
        "text_column": text_column,
        "label_column": label_column,
        "rows_read": len(rows),
        "dropped_empty_text": empty_text,
        "dropped_missing_label": missing_label,
        "dropped_exact_duplicates": exact_duplicates,
        "conflicting_duplicate_texts": len(conflicts),
        "conflicting_duplicates_dropped_rows": conflict_rows_dropped,
        "conflicting_duplicate_examples": [
            {"text": t, "labels": ls} for t, ls in list(conflicts.items())[:10]
        ],
        "rows_kept": len(texts),
        "labels": len(support),
        "support": dict(sorted(support.items())),
    }
    _log_report(report)
    return TicketDataset(texts, labels, text_column, label_column, report)


def dedupe_model_inputs(dataset: TicketDataset, normalize: Callable[[str], str]) -> TicketDataset:
    """Drop rows whose *model input* (``normalize(text)``, i.e. the preprocessed text) repeats a
    kept row with the same label.

    Templated e-mails that differ only in what preprocessing removes (greeting, signature, a
    masked account number) reduce to the same input: kept, one copy could be trained on and
    another scored in the test split. The first row of each input is kept; inputs that appear
    with different labels are kept and reported, as raw conflicts are. Counts and examples go
    into the dataset's report.
    """
    seen: dict[tuple[str, str], str] = {}
    labels_by_input: dict[str, set[str]] = defaultdict(set)
    texts: list[str] = []
    labels: list[str] = []
    examples: list[dict[str, str]] = []
    for text, label in zip(dataset.texts, dataset.labels, strict=True):
        key = normalize(text)
        labels_by_input[key].add(label)
        if (key, label) in seen:
            if len(examples) < 10:
                examples.append({"dropped": text, "kept": seen[(key, label)], "model_input": key})
            continue
        seen[(key, label)] = text
        texts.append(text)
        labels.append(label)
    conflicts = {k: sorted(v) for k, v in labels_by_input.items() if len(v) > 1}
    report = dict(dataset.report)
    report.update(
        {
            "dropped_model_input_duplicates": len(dataset) - len(texts),
            "model_input_duplicate_examples": examples,
            "conflicting_model_inputs": len(conflicts),
            "conflicting_model_input_examples": [
                {"model_input": k, "labels": v} for k, v in list(conflicts.items())[:10]
            ],
            "rows_kept": len(texts),
            "support": dict(sorted(Counter(labels).items())),
        }
    )
    if len(texts) < len(dataset):
        log.warning(
            "%s: %d row(s) dropped: same label and same text after preprocessing as a kept row",
            report.get("source", "data"),
            len(dataset) - len(texts),
        )
    return TicketDataset(texts, labels, dataset.text_column, dataset.label_column, report)


def load_model_inputs(
    path: str | Path,
    text_column: str,
    label_column: str,
    preprocessing: PreprocessConfig,
    encoding: str = "utf-8",
) -> TicketDataset:
    """The ticket file, with duplicates of the model's input (the text as ``preprocessing``
    leaves it) dropped: :func:`load_tickets`, then :func:`dedupe_model_inputs`."""
    from functools import partial

    from triage_core.preprocessing import preprocess

    dataset = load_tickets(path, text_column, label_column, encoding)
    return dedupe_model_inputs(dataset, partial(preprocess, config=preprocessing))


def _log_report(report: dict[str, Any]) -> None:
    log.info(
        "loaded %s: %d rows read, %d kept, %d labels (support %d..%d)",
        report["source"],
        report["rows_read"],
        report["rows_kept"],
        report["labels"],
        min(report["support"].values()),
        max(report["support"].values()),
    )
    for key in ("dropped_empty_text", "dropped_missing_label", "dropped_exact_duplicates"):
        if report[key]:
            log.warning("%s: %d row(s) %s", report["source"], report[key], key.replace("_", " "))
    if report["conflicting_duplicate_texts"]:
        log.warning(
            "%s: %d text(s) appear with different labels (%s), e.g. %s",
            report["source"],
            report["conflicting_duplicate_texts"],
            "dropped" if report["conflicting_duplicates_dropped_rows"] else "kept",
            report["conflicting_duplicate_examples"][:3],
        )


# --- splitting -------------------------------------------------------------------------------
@dataclass
class Splits:
    train: TicketDataset
    validation: TicketDataset
    test: TicketDataset
    info: dict[str, Any]

    def __iter__(self):
        return iter((self.train, self.validation, self.test))

    @property
    def label_names(self) -> list[str]:
        """Sorted label names over the three splits: the model's label order."""
        return sorted(set(self.train.labels) | set(self.validation.labels) | set(self.test.labels))


def _fingerprint(dataset: TicketDataset) -> str:
    digest = hashlib.sha256()
    for text, label in zip(dataset.texts, dataset.labels, strict=True):
        digest.update(text.encode("utf-8") + b"\x1f" + label.encode("utf-8") + b"\x1e")
    return digest.hexdigest()


def split_dataset(
    dataset: TicketDataset, validation_size: float = 0.1, test_size: float = 0.1, seed: int = 42
) -> Splits:
    """Stratified train/validation/test split (scikit-learn), deterministic for ``seed``.

    A label with fewer rows than there are splits cannot have one in each: its rows all go to
    the training split (learned, never validated or tested), and :func:`rare_labels` names it
    with a warning. scikit-learn gives a label of 3 rows or more one in each split.
    """
    from sklearn.model_selection import train_test_split

    if not (0 < validation_size < 1 and 0 < test_size < 1 and validation_size + test_size < 1):
        raise DataError(f"invalid split sizes: validation {validation_size}, test {test_size}")
    support = Counter(dataset.labels)
    too_rare = {label for label, n in support.items() if n < len(SPLIT_NAMES)}
    indices = [i for i, label in enumerate(dataset.labels) if label not in too_rare]
    train_only = [i for i, label in enumerate(dataset.labels) if label in too_rare]
    try:
        rest, test_idx = train_test_split(
            indices, test_size=test_size, random_state=seed, stratify=[dataset.labels[i] for i in indices]
        )
        rest_labels = [dataset.labels[i] for i in rest]
        train_idx, val_idx = train_test_split(
            rest,
            test_size=validation_size / (1 - test_size),
            random_state=seed,
            stratify=rest_labels,
        )
    except ValueError as exc:
        raise DataError(
            f"cannot split {len(dataset)} rows / {len(dataset.label_names)} labels stratified into "
            f"{1 - validation_size - test_size:.0%}/{validation_size:.0%}/{test_size:.0%}: {exc}. "
            "Each split needs at least one example per label: add data or merge rare labels."
        ) from None
    train_idx = list(train_idx) + train_only

    def subset(idx: list[int], name: str) -> TicketDataset:
        idx = sorted(idx)
        return TicketDataset(
            [dataset.texts[i] for i in idx],
            [dataset.labels[i] for i in idx],
            dataset.text_column,
            dataset.label_column,
            {"split": name},
        )

    parts = [subset(train_idx, "train"), subset(val_idx, "validation"), subset(test_idx, "test")]
    rare = rare_labels(parts, validation_size, test_size)
    info = {
        "seed": seed,
        "validation_size": validation_size,
        "test_size": test_size,
        "fingerprint": _fingerprint(dataset),
        "text_column": dataset.text_column,
        "label_column": dataset.label_column,
        "sizes": {p.report["split"]: len(p) for p in parts},
        "support": {
            label: {p.report["split"]: p.support().get(label, 0) for p in parts}
            for label in dataset.label_names
        },
        "rare_labels": rare,
        "load_report": dataset.report,
    }
    return Splits(*parts, info=info)


def rare_labels(parts: list[TicketDataset], validation_size: float, test_size: float) -> list[dict[str, Any]]:
    """Labels that a split did not get a single row of, each logged as a warning that names it,
    its rows and where they ended up. A stratified split gives a split about ``size`` x rows of a
    label, so a label needs about 1 / min(validation_size, test_size) rows (10 at 80/10/10) for
    one to land in each; with fewer it is trained on but never validated or tested (issue #20:
    "a label with two rows silently lands entirely in train")."""
    needed = math.ceil(1 / min(validation_size, test_size))
    found = []
    counts = {part.report["split"]: part.support() for part in parts}
    for label in sorted(set().union(*(c.keys() for c in counts.values()))):
        where = {name: counts[name].get(label, 0) for name in counts}
        missing = [name for name, n in where.items() if n == 0]
        if not missing:
            continue
        rows = sum(where.values())
        found.append({"label": label, "rows": rows, "splits": where, "missing_from": missing})
        log.warning(
            "label %r has %d row(s), too few to split (each split needs one: about %d rows at these "
            "sizes): %s; it is %s",
            label,
            rows,
            needed,
            ", ".join(f"{n} in {name}" for name, n in where.items()),
            "never validated or tested"
            if set(missing) >= {"validation", "test"}
            else f"not in {' or '.join(missing)}",
        )
    return found


def _write_csv(path: Path, dataset: TicketDataset) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([split_text_column(dataset.text_column), dataset.label_column])
        writer.writerows(zip(dataset.texts, dataset.labels, strict=True))


def write_splits(splits: Splits, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for part in splits:
        _write_csv(directory / f"{part.report['split']}.csv", part)
    (directory / SPLIT_INFO_FILE).write_text(json.dumps(splits.info, indent=2) + "\n", encoding="utf-8")
    return directory


def load_or_create_splits(
    dataset: TicketDataset,
    directory: str | Path,
    validation_size: float = 0.1,
    test_size: float = 0.1,
    seed: int = 42,
) -> Splits:
    """Re-use the splits in ``directory`` if they were made from the same rows with the same seed.

    Otherwise split, write ``{train,validation,test}.csv`` + ``split_info.json`` and return them.
    """
    directory = Path(directory)
    info_path = directory / SPLIT_INFO_FILE
    wanted = {
        "seed": seed,
        "validation_size": validation_size,
        "test_size": test_size,
        "fingerprint": _fingerprint(dataset),
        "text_column": dataset.text_column,
        "label_column": dataset.label_column,
    }
    if info_path.is_file() and all((directory / f"{n}.csv").is_file() for n in SPLIT_NAMES):
        try:
            info = json.loads(info_path.read_text("utf-8"))
        except json.JSONDecodeError:
            info = {}
        if all(info.get(k) == v for k, v in wanted.items()):
            parts = []
            for name in SPLIT_NAMES:
                part = load_tickets(
                    directory / f"{name}.csv",
                    split_text_column(dataset.text_column),
                    dataset.label_column,
                    min_examples=1,
                )
                part.text_column = dataset.text_column
                part.report["split"] = name
                parts.append(part)
            log.info("re-using the splits in %s (seed %d, same source rows)", directory, seed)
            return Splits(*parts, info=info)
        log.info("splits in %s were made from other data or settings: re-splitting", directory)
    splits = split_dataset(dataset, validation_size, test_size, seed)
    write_splits(splits, directory)
    log.info("wrote splits to %s: %s", directory, splits.info["sizes"])
    return splits


def format_support(info: dict[str, Any]) -> str:
    """A plain-text per-class support table (train/validation/test) for logs and the console."""
    support: dict[str, dict[str, int]] = info["support"]
    width = max(len(label) for label in support)
    lines = [f"{'label':<{width}}  train  val  test"]
    for label, counts in support.items():
        lines.append(
            f"{label:<{width}}  {counts['train']:>5}  {counts['validation']:>3}  {counts['test']:>4}"
        )
    return "\n".join(lines)
