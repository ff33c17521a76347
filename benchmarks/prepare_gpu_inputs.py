"""Build the folder benchmarks/gpu.py reads on a GPU machine that has nothing but the repository.

    python benchmarks/prepare_gpu_inputs.py [--features results/tiny-en/features]
        [--encoder ../shared/models/whisper-tiny.en-encoder] [--out .gpu-inputs]

Writes (about 58 MiB, under the device tool's 64 MiB for carried paths):

* ``encoder/``: the pretrained Whisper tiny.en encoder (config, float16
  safetensors, feature-extractor config) and a ``base_model.json`` record;
* ``features/{train,val,test}/``: a features-stage cache (clip log-mels of the
  simulated study of config/tiny-en.yaml) stored as float16, with labels and
  meta (gpu.py turns it back into float32);
* ``pylib/``: accelerate and psutil (pure Python and an abi3 wheel), which HF
  ``Trainer`` needs and a bare GPU image may lack; gpu.py uses them only when
  its own Python has none;
* ``MANIFEST.json``: sizes and SHA-256 of every file.

`.gpu-inputs/` is git-ignored: carry it with the run (``carry: [".gpu-inputs"]``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np

from gwlora.constants import SPLITS

REPO = Path(__file__).resolve().parents[1]
LIMIT = 64 * 2**20


def copy_package(name: str, out: Path) -> None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        print(f"  {name}: not installed here, not carried")
        return
    src = Path(spec.origin).parent
    shutil.copytree(src, out / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests", "test"), dirs_exist_ok=True)
    # the metadata too: transformers checks a package's version before it uses it
    for info in src.parent.glob(f"{name}-*.dist-info"):
        shutil.copytree(info, out / info.name, dirs_exist_ok=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", type=Path, default=REPO / "results" / "tiny-en" / "features")
    p.add_argument("--encoder", type=Path, default=REPO / ".." / "shared" / "models" / "whisper-tiny.en-encoder")
    p.add_argument("--out", type=Path, default=REPO / ".gpu-inputs")
    p.add_argument("--no-pylib", action="store_true", help="do not carry accelerate and psutil")
    args = p.parse_args(argv)
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    (out / "encoder").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        shutil.copy2(args.encoder / name, out / "encoder" / name)
    cfg = json.loads((args.encoder / "config.json").read_text())
    record = {"source": str(args.encoder), "random_init": False, "seed": None, "d_model": cfg["d_model"],
              "encoder_layers": cfg["encoder_layers"], "encoder_attention_heads": cfg["encoder_attention_heads"],
              "num_mel_bins": cfg["num_mel_bins"]}
    (out / "encoder" / "base_model.json").write_text(json.dumps(record, indent=2))
    for split in SPLITS:
        src, dst = args.features / split, out / "features" / split
        dst.mkdir(parents=True)
        np.save(dst / "features.npy", np.load(src / "features.npy").astype(np.float16))
        shutil.copy2(src / "labels.npy", dst / "labels.npy")
        shutil.copy2(src / "meta.json", dst / "meta.json")
    if not args.no_pylib:
        for name in ("accelerate", "psutil"):
            copy_package(name, out / "pylib")
    files = sorted(f for f in out.rglob("*") if f.is_file())
    manifest = {str(f.relative_to(out)): {"bytes": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()} for f in files}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    total = sum(v["bytes"] for v in manifest.values())
    print(f"wrote {out}: {len(files)} files, {total / 2**20:.1f} MiB")
    if total > LIMIT - 2 * 2**20:
        print(f"warning: {total / 2**20:.1f} MiB leaves little of the 64 MiB carry limit for the repository itself")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
