"""The record a training run leaves, as typed objects: ``summary.json``, ``curve.csv`` and ``predictions.csv``.

Written by :mod:`gwlora.train` (and ``predictions.csv`` by :mod:`gwlora.evaluate`
too), read by :mod:`gwlora.evaluate` and :mod:`gwlora.aggregate`; every reader
checks what another process wrote (the keys, the columns, the types) and names
the file at fault.

* ``summary.json`` (:class:`Summary`): one JSON object, the fields of its parts
  side by side: who the run is (:class:`Identity`), the quality of its best
  checkpoint (:class:`Quality`), whether it learned (:class:`Learning`), what it
  cost (:class:`Costs`), how it was set up (:class:`Settings`), what
  :mod:`gwlora.evaluate` needs to rebuild its model (:class:`Rebuild`), and its
  software, hardware and commit (:class:`Provenance`);
* ``curve.csv`` (:class:`CurveRow`), one row per evaluation: ``step``, ``epoch``,
  ``samples_seen``, ``train_time_s`` (cumulative wall time spent training,
  evaluation excluded), ``train_loss`` (mean since the previous evaluation),
  ``val_loss``, ``val_auc``, ``val_accuracy``, ``val_brier``;
* ``predictions.csv`` (:data:`PREDICTION_COLUMNS`): every scored window's index,
  label, injection SNR (0 for noise) and logit.
"""

from __future__ import annotations

import csv
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from .cli import StageError, atomic_file, read_json, write_json

SUMMARY_FILE = "summary.json"
CURVE_FILE = "curve.csv"
PREDICTIONS_FILE = "predictions.csv"


@dataclass(frozen=True)
class Identity:
    """Which run this is: the variant (its display name, run id, family, config key and whole configuration), seed and sizes."""

    variant: str
    run: str
    family: str
    config_key: str
    variant_config: dict
    seed: int
    trainable_parameters: int
    total_parameters: int
    trainable_percent: float


@dataclass(frozen=True)
class Quality:
    """All of one checkpoint, the lowest val loss, the one the test split scores (None without a test split)."""

    best_val_loss: float
    val_auc: float
    best_step: int
    val_accuracy: float
    val_brier: float
    test_auc: float | None
    test_loss: float | None
    test_accuracy: float | None
    test_tpr_at_fpr: float | None
    test_brier: float | None
    test_one_class: bool | None
    tpr_fpr: float  # the FPR of test_tpr_at_fpr


@dataclass(frozen=True)
class Learning:
    """Whether it learned: the val loss before the first step, a constant predictor's, and what went wrong (:func:`gwlora.scoring.learning_problems`)."""

    initial_val_loss: float | None
    chance_val_loss: float
    did_not_learn: bool
    val_loss_flat: bool
    did_not_learn_because: str
    still_improving: bool  # its val loss may still have been falling at its last evaluation (gwlora.scoring.still_improving)


@dataclass(frozen=True)
class Costs:
    """Time, memory, size and inference latency (per mode: base, unmerged, merged), and the sequence the encoder layers saw."""

    time_to_best_s: float
    train_time_s: float
    compile_time_s: float
    steps: int
    epochs_run: float
    early_stopped: bool
    step_time_ms: float
    samples_per_s: float
    checkpoint_bytes: int
    latency_ms: dict  # at the eval batch, latency_batch windows
    latency_batch: int
    latency_ms_batch1: dict
    sequence: dict  # gwlora.methods.sequence_cost
    peak_memory_bytes: int
    # {"eval": {mode: [q25, q75] ms}, "batch1": {...}}: the repetitions' spread behind each median (absent in older records)
    latency_quartiles_ms: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """How the run was set up: device, precision, torch.compile (asked for, ran, why it fell back), batch, learning rates, schedule, model, encoder cache."""

    device: str
    precision: str  # fp32 | bf16 (autocast): gwlora.precision
    precision_reason: str  # why: train.precision, or what auto found on the device
    compile: dict
    batch_size: int
    lr: float
    head_lr: float | None
    schedule: dict
    base_model: str
    context: str
    pooling: str
    # gwlora.encoder_cache: setting, used, inputs (what was cached), precision (it was computed in), source, compute_s, reason (why not)
    encoder_cache: dict


@dataclass(frozen=True)
class Rebuild:
    """What :mod:`gwlora.evaluate` needs to rebuild the model and score the best checkpoint exactly as the test split was."""

    model_config: dict
    base_model_dir: str
    input: dict  # channels, n_frames
    eval_batch_size: int


@dataclass(frozen=True)
class Provenance:
    """What ran it: Python's and the libraries' versions, the processor and GPU, the workflow's commit (None outside git)."""

    versions: dict
    hardware: dict
    git_commit: str | None


PARTS = {"identity": Identity, "quality": Quality, "learning": Learning, "costs": Costs, "settings": Settings, "rebuild": Rebuild,
         "provenance": Provenance}


@dataclass(frozen=True)
class Summary:
    """A run's ``summary.json``: its parts' fields side by side in one JSON object (readers look keys up by name)."""

    identity: Identity
    quality: Quality
    learning: Learning
    costs: Costs
    settings: Settings
    rebuild: Rebuild
    provenance: Provenance

    def to_json(self) -> dict:
        return {f.name: getattr(part, f.name) for part in (getattr(self, name) for name in PARTS) for f in fields(part)}

    @classmethod
    def from_json(cls, record: dict, source: str | Path) -> Summary:
        """The summary in `record`, checked: every key of every part, of its type, and no other; errors name `source`."""
        known = {f.name for part in PARTS.values() for f in fields(part)}
        optional = {f.name for part in PARTS.values() for f in fields(part) if f.default_factory is not MISSING}  # added later: may be absent
        missing, unknown = sorted(known - optional - set(record)), sorted(set(record) - known)
        if missing or unknown:
            lacks = f"lacks {', '.join(missing)}" if missing else ""
            extra = f"has unknown keys {', '.join(unknown)}" if unknown else ""
            raise StageError(f"{source}: {' and '.join(filter(None, (lacks, extra)))}; written by another gwlora version? retrain the run")
        return cls(**{name: _checked(part, record, source) for name, part in PARTS.items()})

    def write(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / SUMMARY_FILE, self.to_json())


def read_summary(run_dir: str | Path) -> Summary:
    """The checked summary.json of a finished run in `run_dir`."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        raise StageError(f"{run_dir}: no {SUMMARY_FILE}, so not a finished training run")
    record = read_json(path, rebuild=f"train the run again (delete {run_dir}, then snakemake reruns it, or --forcerun train)")
    if not isinstance(record, dict):
        raise StageError(f"{path}: not a JSON object")
    return Summary.from_json(record, path)


def _checked(part: type, record: dict, source) -> object:
    """`part` built from its fields in `record`, each checked against its annotation."""
    hints = typing.get_type_hints(part)
    present = [f for f in fields(part) if f.name in record]  # an optional field absent takes its default
    for f in present:
        if not _is_a(record[f.name], hints[f.name]):
            raise StageError(f"{source}: {f.name} is {record[f.name]!r}, not {_type_name(hints[f.name])}")
    return part(**{f.name: record[f.name] for f in present})


def _is_a(value, hint) -> bool:
    if isinstance(hint, types.UnionType):
        return any(_is_a(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool):  # JSON's true is no number
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


def _type_name(hint) -> str:
    return " or ".join("null" if h is type(None) else h.__name__ for h in typing.get_args(hint) or (hint,))


@dataclass(frozen=True)
class CurveRow:
    """One evaluation of a run: ``curve.csv``'s columns, in order."""

    step: int
    epoch: float
    samples_seen: int
    train_time_s: float
    train_loss: float
    val_loss: float
    val_auc: float
    val_accuracy: float
    val_brier: float


CURVE_COLUMNS = tuple(f.name for f in fields(CurveRow))


def write_curve(rows: list[dict], path: Path) -> None:
    """`rows` (:class:`CurveRow`'s fields) as ``curve.csv``."""
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_curve(path: Path) -> pd.DataFrame:
    """A run's ``curve.csv``, checked for its columns."""
    return _read_csv(path, CURVE_COLUMNS)


PREDICTION_COLUMNS = ("window", "label", "snr", "logit")


def write_predictions(path: Path, labels: np.ndarray, snr: np.ndarray, logits: np.ndarray) -> None:
    """Every scored window's label, injection SNR (0 for noise) and logit, in window order, for per-window analyses (AUC vs SNR)."""
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(PREDICTION_COLUMNS)
        for i, (label, snr_i, logit) in enumerate(zip(np.asarray(labels).tolist(), np.asarray(snr).tolist(), np.asarray(logits).tolist())):
            writer.writerow([i, int(label), f"{snr_i:.6g}", f"{logit:.6g}"])


def read_predictions(path: Path) -> pd.DataFrame:
    """A ``predictions.csv``, checked for its columns."""
    return _read_csv(path, PREDICTION_COLUMNS)


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise StageError(f"{path}: not a CSV file ({exc})") from exc
    if tuple(frame.columns) != columns:
        raise StageError(f"{path}: columns {', '.join(frame.columns)}, expected {', '.join(columns)}")
    for column in columns:
        values = frame[column]
        bad = values[pd.to_numeric(values, errors="coerce").isna() & values.notna()]
        if len(bad):
            raise StageError(f"{path}: column {column} holds {bad.iloc[0]!r}, not a number")
    return frame
