"""Dataset build throughput: windows per second of the `dataset` stage's simulated source.

    python benchmarks/dataset_throughput.py [--windows 400]

Builds one split with the demo config's physics (aLIGO design PSD, IMRPhenomD
injections, 8 s whitening segments, 2048 Hz -> 16 kHz), half signal and half
noise, in this process, and prints the rates side by side.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from pathlib import Path

import numpy as np
import yaml

from gwlora.config import load_schema, validate
from gwlora.dataset import simulated_window

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=400)
    args = parser.parse_args()
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    data = validate(config, load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml"))["data"]
    simulated_window(copy.deepcopy(data), 0, "train", 0, 1)  # warm caches (PSD, LAL)
    rates = {}
    for label, name in ((0, "noise"), (1, "signal")):
        start = time.perf_counter()
        for i in range(args.windows // 2):
            simulated_window(data, 0, "train", i, label)
        rates[name] = (args.windows // 2) / (time.perf_counter() - start)
    mixed = 2 / (1 / rates["noise"] + 1 / rates["signal"])
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, numpy {np.__version__}")
    print(f"noise windows:  {rates['noise']:7.1f} windows/s")
    print(f"signal windows: {rates['signal']:7.1f} windows/s (waveform + projection + SNR scaling)")
    print(f"50/50 split:    {mixed:7.1f} windows/s (one process)")


if __name__ == "__main__":
    main()
