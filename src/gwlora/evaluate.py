"""Stage `evaluate`: score a trained run's best checkpoint on a feature cache, without retraining.

The workflow runs it once per shifted test set of ``evaluation.test_sets``,
for every run (variant, lr, seed) in one process (``--name``: each run's
``shift/<name>/``); users run it on data of their own::

    gwlora-evaluate --run results/demo/runs/lora-r8/seed0 --features results/demo/features/shift-quiet --out scored/

The model is rebuilt from what the run recorded in ``summary.json`` (model
config, variant, seed, input shape, evaluation batch) over the base model it
started from, the best checkpoint is verified against its checksums and
loaded, and the split is scored by :func:`gwlora.scoring.score_checkpoint`, the
function that scored the run's test split: on the same device type and with
the same batch, the run's own test split gives back its ``test_auc`` to the
last digit.

Writes ``predictions.csv`` (window, label, snr, logit) and ``metrics.json``
(AUC, TPR at the run's FPR, accuracy at logit 0, Brier score, loss, whether
every window got one class, and what was scored) into ``--out``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .cli import StageError, atomic_dir, run_stage, write_json
from .variants import Variant
from .precision import recorded_precision
from .records import PREDICTIONS_FILE, Summary, read_summary
from .scoring import BEST_DIR, SplitOnDevice, build_model, resolve_device, score_checkpoint

log = logging.getLogger("gwlora.evaluate")


def load_run(run_dir: str | Path) -> Summary:
    """A finished run's checked summary.json, with the best checkpoint it scores."""
    summary = read_summary(run_dir)
    if not (Path(run_dir) / BEST_DIR).is_dir():
        raise StageError(f"{run_dir}: no {BEST_DIR}/ checkpoint to score")
    return summary


def score_run(
    run_dir: str | Path, features_dir: str | Path, out: str | Path, model_dir: str | Path | None = None, device: str | None = None,
    loaded: dict | None = None,
) -> dict:
    """Score the best checkpoint of `run_dir` on the features in `features_dir`; write predictions.csv and metrics.json into `out`.

    `loaded`: a dict the caller keeps across runs, so that a feature cache is verified and loaded once per device, not once a run.
    """
    run_dir, features_dir = Path(run_dir), Path(features_dir)
    summary = load_run(run_dir)
    identity, rebuild = summary.identity, summary.rebuild
    model_dir = Path(model_dir if model_dir is not None else rebuild.base_model_dir)
    if not model_dir.is_dir():
        raise StageError(f"{run_dir}: its base model {model_dir} does not exist; give the base model directory with --model")
    trained_on = torch.device(summary.settings.device).type
    target = resolve_device(device or ("auto" if trained_on == "cuda" else "cpu"))
    if target.type != trained_on:
        log.warning("%s was trained and tested on %s; scoring on %s, so its numbers may differ in the last digits", run_dir, trained_on, target)
    loaded = {} if loaded is None else loaded
    key = (str(features_dir), str(target))
    if key not in loaded:
        loaded[key] = SplitOnDevice(features_dir, target)  # its cache checked against its checksums
    split = loaded[key]
    meta, expected = split.meta, rebuild.input
    if len(meta["channels"]) != len(expected["channels"]) or meta["n_frames"] != expected["n_frames"]:
        raise StageError(
            f"{features_dir}: windows of {len(meta['channels'])} channel(s) x {meta['n_frames']} frames, but {run_dir} was trained on "
            f"{len(expected['channels'])} channel(s) ({', '.join(expected['channels'])}) x {expected['n_frames']} frames"
        )
    variant = Variant.from_dict(identity.variant_config)
    tpr_fpr = summary.quality.tpr_fpr
    model, _ = build_model(model_dir, expected, rebuild.model_config, variant, identity.seed, target)
    with atomic_dir(out) as tmp:
        precision = recorded_precision(summary.settings.precision, target)  # as the run scored its test split
        metrics = score_checkpoint(model, variant, run_dir / BEST_DIR, split, rebuild.eval_batch_size, tpr_fpr, tmp / PREDICTIONS_FILE, precision)
        record = {
            "variant": identity.variant,
            "run": identity.run,
            "lr": variant.lr,
            "seed": identity.seed,
            "checkpoint": f"{run_dir / BEST_DIR} (step {summary.quality.best_step}, the lowest val loss)",
            "features": str(features_dir),
            "split": meta.get("split"),
            "n_windows": split.n,
            "n_signal": int(split.y.sum().item()),
            "device": str(target),
            "precision": precision.name,
            "tpr_fpr": tpr_fpr,
            **metrics,
        }
        write_json(tmp / "metrics.json", record)
    return record


def _parser(p):
    p.add_argument("--run", required=True, nargs="+", help="finished runs' directories (each with summary.json and a best/ checkpoint)")
    p.add_argument("--features", required=True, help="a feature cache made by the features stage (e.g. results/<experiment>/features/shift-<name>)")
    p.add_argument("--model", help="the base model directory the run started from (default: the one its summary.json names)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the device type the run was trained on, else the CPU)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="output directory of one run's predictions.csv and metrics.json")
    where.add_argument("--name", help="a test set's name: each run's scores go to RUN/shift/NAME/ (the workflow's evaluate rule)")


def _run(args):
    """Score trained runs' best checkpoints on a feature cache."""
    if args.out and len(args.run) > 1:
        raise StageError("--out holds one run's scores; give --name to score several runs (each into RUN/shift/NAME/)")
    loaded: dict = {}  # the feature cache, loaded for the first run and reused by the others
    for run in args.run:
        record = score_run(run, args.features, args.out or Path(run) / "shift" / args.name, args.model, args.device, loaded)
        log.info(
            "%s seed %d on %s: AUC %.4f, TPR %.3f at %g FPR, accuracy %.3f, Brier %.4f over %d windows%s",
            record["run"], record["seed"], args.features, record["auc"], record["tpr_at_fpr"], record["tpr_fpr"], record["accuracy"],
            record["brier"], record["n_windows"], " (every window one class)" if record["one_class"] else "",
        )


def main(argv=None) -> int:
    return run_stage("evaluate", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
