"""Stage `encoder_outputs`: what a frozen encoder prefix makes of a split, computed once and shared by every lr and seed.

A frozen layer's output never changes during training. The frozen encoder
(``frozen``: the head alone trains) and partial fine-tuning (``partial-top<k>``:
the top k layers, the final layer norm and the head) train above such a prefix
(:meth:`gwlora.families.family.Family.trainable_top_layers`), so running it at
every step of every epoch of every run repeats the same arithmetic. This stage
runs it once per (base model, context, cache point, split), and the training
stage trains and validates on its output (:func:`attach`):

* ``pooled``: the frozen encoder's pooled output of each channel, float32
  [windows, channels, d_model];
* ``top<k>-input``: the hidden states entering the first trainable layer,
  float32 [windows, channels, positions, d_model].

Output, one directory per split: ``outputs.npy`` and ``meta.json`` (the cache
point, context, pooling, precision, the checksums of the feature files it was
computed from, and the size and SHA-256 of ``outputs.npy``, checked whenever
it is loaded, as :mod:`gwlora.features` does). It is computed in the run's
precision (``train.precision`` resolved on the device, recorded) with the
encoder in eval mode, so it equals what an uncached run computes in training
mode only where the frozen part has no randomness: an encoder with dropout or
layer drop is refused, and so is a cache above :data:`MAX_CACHE_BYTES` per
split (partial's hidden states at 30 s context); then ``meta.json`` says why,
no ``outputs.npy`` is written, and the runs train the whole model as before,
their summary.json saying why.

Only training and validation read it: the best checkpoint is a whole
classifier, so the test split, ``gwlora-evaluate``, the shifted test sets and
the inference latency run the full model on the features.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .cache_points import CACHED_SPLITS, MAX_CACHE_BYTES, cache_bytes, cache_point, cache_setting, describe, top_layers_of
from .cli import StageError, atomic_dir, json_arg, read_json, run_stage, write_json
from .download import sha256_of
from .families import family
from .features import verify_cache
from .model import StrainClassifier, build_classifier
from .precision import Precision, autocast, resolve_precision
from .scoring import SplitOnDevice, resolve_device
from .variants import Variant

log = logging.getLogger("gwlora.encoder_cache")

OUTPUTS_FILE = "outputs.npy"
META_FILE = "meta.json"
STAGE = "encoder_outputs"
# WhisperConfig keys that make the frozen encoder random in training mode, where a cache made in eval mode would differ
STOCHASTIC_KEYS = ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop")


def refusal(encoder: nn.Module, top_layers: int, n_windows: int, n_channels: int) -> str | None:
    """Why a cache would not stand in for the frozen prefix (random in training mode, or too large), or None."""
    random = [f"{key} {getattr(encoder.config, key)}" for key in STOCHASTIC_KEYS if (getattr(encoder.config, key, 0.0) or 0.0) > 0]
    if random:
        return f"the frozen encoder is random in training mode ({', '.join(random)} in its config), so a cache would not equal it"
    nbytes = cache_bytes(top_layers, n_windows, n_channels, encoder.embed_positions.num_embeddings, encoder.config.d_model)
    if nbytes > MAX_CACHE_BYTES:
        return f"the {describe(top_layers)} of {n_windows} windows take {nbytes / 2**30:.1f} GiB, above the {MAX_CACHE_BYTES / 2**30:.0f} GiB bound"
    return None


class _Reached(Exception):
    """Raised by a forward pre-hook to stop the encoder where the trainable layers begin, carrying their input."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__("reached the first trainable layer")
        self.hidden = hidden


@torch.no_grad()
def prefix_outputs(classifier: StrainClassifier, x: torch.Tensor, top_layers: int) -> torch.Tensor:
    """What the frozen prefix makes of features `x` [B, C, mels, frames]: pooled [B, C, d] or the top layers' input [B, C, T, d]."""
    b, c = x.shape[:2]
    inputs = classifier.pad_to_context(x.flatten(0, 1))
    if top_layers == 0:
        return classifier.pool(classifier.encoder(input_features=inputs).last_hidden_state).unflatten(0, (b, c))
    layers = classifier.encoder.layers

    def stop(module, args):
        raise _Reached(args[0])

    handle = layers[len(layers) - top_layers].register_forward_pre_hook(stop)  # transformers' own embedding, then stop
    try:
        classifier.encoder(input_features=inputs)
    except _Reached as reached:
        return reached.hidden.unflatten(0, (b, c))
    finally:
        handle.remove()
    raise StageError(f"the encoder never called its layer {len(layers) - top_layers}, so its input could not be cached")


def encode(classifier: StrainClassifier, split: SplitOnDevice, top_layers: int, batch_size: int, precision: Precision, desc: str) -> torch.Tensor:
    """The frozen prefix's outputs for every window of `split`, in eval mode and `precision`, float32 on the CPU."""
    was_training = classifier.training
    classifier.eval()
    outputs = []
    for idx in tqdm(torch.arange(split.n).split(batch_size), desc=desc, unit="batch", mininterval=2.0):
        x, _ = split.batch(idx)
        with autocast(precision, split.device):
            outputs.append(prefix_outputs(classifier, x, top_layers).float().cpu())
    classifier.train(was_training)
    return torch.cat(outputs)


class TrainsAbove(nn.Module):
    """The classifier from the cache point up, on cached inputs: what a cached run trains and validates.

    Its parameters are the classifier's own, so the optimiser, the best
    checkpoint and the run state are those of the uncached run.
    """

    def __init__(self, classifier: StrainClassifier, top_layers: int):
        super().__init__()
        self.classifier, self.top_layers = classifier, top_layers

    def forward(self, cached: torch.Tensor) -> torch.Tensor:
        b = cached.shape[0]
        if self.top_layers == 0:
            return self.classifier.classify(cached.flatten(0, 1), b)
        encoder = self.classifier.encoder
        hidden = cached.flatten(0, 1)
        for layer in encoder.layers[len(encoder.layers) - self.top_layers :]:
            hidden = layer(hidden, None)  # as WhisperEncoder.forward calls them: no attention mask
        return self.classifier.classify(self.classifier.pool(encoder.layer_norm(hidden)), b)


def source_checksums(features_dir: str | Path) -> dict:
    """The checksums the feature cache records of its files: what a cache made from it must name."""
    return read_json(Path(features_dir) / "meta.json")["files"]


def expected_meta(model_config: dict, top_layers: int, features_dir: str | Path) -> dict:
    """The meta.json entries a cache must have to stand in for a run's frozen prefix."""
    expected = {"point": cache_point(top_layers), "context": model_config["context"], "features": source_checksums(features_dir)}
    if top_layers == 0:
        expected["pooling"] = model_config["pooling"]  # the top layers' input does not depend on the pooling
    return expected


def write_cache(features_dir, model_dir, model_config: dict, train_config: dict, point: str, out) -> dict:
    """The encoder_outputs stage: the frozen prefix's outputs of one split written to `out`, or meta.json saying why not."""
    top = top_layers_of(point)
    device = resolve_device(train_config["device"])
    if device.type == "cpu":
        torch.set_num_threads(train_config["threads"])
    split = SplitOnDevice(features_dir, device)
    classifier = build_classifier(model_dir, len(split.meta["channels"]), split.meta["n_frames"], model_config).to(device)
    precision = resolve_precision(train_config["precision"], device)
    meta = {**expected_meta(model_config, top, features_dir), "pooling": model_config["pooling"], "top_layers": top,
            "split": split.meta.get("split"), "n_windows": split.n, "precision": precision.name, "precision_reason": precision.reason}
    reason = refusal(classifier.encoder, top, split.n, len(split.meta["channels"]))
    with atomic_dir(out) as tmp:
        meta["files"] = {}
        if reason is None:
            outputs = encode(classifier, split, top, 2 * train_config["batch_size"], precision, f"{point} {meta['split']}")
            np.save(tmp / OUTPUTS_FILE, outputs.numpy())
            meta["shape"] = list(outputs.shape)
            meta["files"][OUTPUTS_FILE] = {"bytes": (tmp / OUTPUTS_FILE).stat().st_size, "sha256": sha256_of(tmp / OUTPUTS_FILE)}
        else:
            meta["refused"] = reason
            log.warning("%s: no cache of the %s: %s", out, describe(top), reason)
        write_json(tmp / META_FILE, meta)
    return meta


def load_cache(cache_dir, features_dir, model_config: dict, top_layers: int, precision: Precision) -> tuple[torch.Tensor | None, str | None]:
    """A verified cache's outputs, or (None, why) where its stage refused one or it was computed in another precision.

    A corrupt file or a cache of other features, context, pooling or cache point raises, naming the file.
    """
    cache_dir = Path(cache_dir)
    meta = verify_cache(cache_dir, STAGE)
    for key, value in expected_meta(model_config, top_layers, features_dir).items():
        if meta.get(key) != value:
            shown = "other checksums" if key == "features" else repr(meta.get(key))
            raise StageError(f"{cache_dir / META_FILE}: {key} is {shown}, not the run's {'features' if key == 'features' else repr(value)} "
                             f"(a stale cache): delete {cache_dir} and run the workflow again (or snakemake --forcerun {STAGE})")
    if "refused" in meta:
        return None, meta["refused"]
    if meta["precision"] != precision.name:
        return None, f"{cache_dir} was computed in {meta['precision']} and the run computes in {precision.name}"
    return torch.from_numpy(np.load(cache_dir / OUTPUTS_FILE)), None


@dataclass
class CacheUse:
    """Whether a run trains on cached encoder outputs: the module and splits it trains on, and what summary.json records."""

    record: dict
    module: nn.Module | None = None
    splits: dict[str, SplitOnDevice] = field(default_factory=dict)

    @property
    def used(self) -> bool:
        return self.module is not None


def attach(model, variant: Variant, splits: dict[str, SplitOnDevice], model_config: dict, train_config: dict, precision: Precision,
           cache_dirs: dict | None = None, features: dict | None = None, label: str = "") -> CacheUse:
    """The run's use of the cache: read from the encoder_outputs stage's `cache_dirs`, or computed here when none are given.

    ``train.encoder_cache: off``, a family that trains the whole encoder, or a
    refused cache leave the run as it was (the reason recorded and logged).
    """
    setting, top = cache_setting(train_config), family(variant.family).trainable_top_layers(variant)
    record = {"setting": setting, "used": False, "inputs": None, "precision": None, "source": None, "compute_s": 0.0, "reason": None}
    if setting == "off" or top is None:
        record["reason"] = "train.encoder_cache: off" if setting == "off" else f"{variant.family} trains the whole encoder: no frozen prefix"
        return CacheUse(record)
    start, cached, reason = time.perf_counter(), {}, None
    if cache_dirs:
        record["source"] = f"the {STAGE} stage"
        for name in CACHED_SPLITS:
            cached[name], reason = load_cache(cache_dirs[name], features[name], model_config, top, precision)
            if reason is not None:
                break
    else:
        record["source"] = "computed by this run"
        reason = refusal(model.encoder, top, max(splits[s].n for s in CACHED_SPLITS), len(splits["train"].meta["channels"]))
        for name in CACHED_SPLITS if reason is None else ():
            cached[name] = encode(model, splits[name], top, 2 * train_config["batch_size"], precision, f"{label} {cache_point(top)} {name}")
    record["compute_s"] = time.perf_counter() - start
    if reason is not None:
        log.warning("%s: trains without an encoder cache: %s", label, reason)
        return CacheUse({**record, "reason": reason})
    log.info("%s: trains on cached %s (%s, %s)", label, describe(top), record["source"], precision.name)
    return CacheUse({**record, "used": True, "inputs": describe(top), "precision": precision.name},
                    TrainsAbove(model, top), {name: splits[name].with_inputs(cached[name]) for name in CACHED_SPLITS})


def _parser(p):
    p.add_argument("--features", required=True, help="the split's feature directory (the features stage's)")
    p.add_argument("--model", required=True, help="base model directory")
    p.add_argument("--model-config", type=json_arg, required=True, help="the runs' `model` section (their context), as JSON")
    p.add_argument("--train-config", type=json_arg, required=True, help="validated `train` section, as JSON (device, precision, threads, batch)")
    p.add_argument("--point", required=True, help="what to cache: pooled (frozen) or top<k>-input (partial-top<k>)")
    p.add_argument("--threads", type=int, help="CPU threads (default: train.threads of the config)")
    p.add_argument("--out", required=True, help="output directory")


def _run(args):
    """Compute a frozen encoder prefix's outputs of one split, once, for every lr and seed of the variants above it."""
    train_config = {**args.train_config, **({"threads": args.threads} if args.threads else {})}
    meta = write_cache(args.features, args.model, args.model_config, train_config, args.point, args.out)
    if "refused" in meta:
        log.info("wrote %s without outputs: %s", args.out, meta["refused"])
    else:
        log.info("wrote %s: %s %s in %s", args.out, args.point, "x".join(map(str, meta["shape"])), meta["precision"])


def main(argv=None) -> int:
    return run_stage(STAGE, _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
