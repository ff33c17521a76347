"""Shared fixtures: a tiny validated config, and a tiny data set, model and feature cache built once."""

from __future__ import annotations

import copy
import os
from pathlib import Path

# pytest-xdist (pyproject's addopts: one worker per core): each worker computes on its share of the cores, set
# before numpy and torch start their thread pools; a test that asks for threads (train.threads) still gets them
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import numpy as np
import pytest
import yaml

from gwlora.config import load_schema, validate

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")

# The outline every deck must follow: the LoRA presentation's (the mission's), not read from the template
OUTLINE = ("Introduction", "Background", "Fine-Tuning and Parameter-Efficient Adaptation", "LoRA",
           "Experiments and Results", "Conclusion", "References", "Appendix")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, the end-to-end (slow) tests spread over the workers' starting blocks.

    The worksteal scheduler gives each worker one contiguous block of the collection to start with (and
    idle workers steal from the back of the others'): each block starts with its share of the slow tests,
    so no worker runs several workflows end to end in a row while another has only unit tests. Every
    worker orders its collection alike, as xdist requires.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    slow = [item for item in items if item.get_closest_marker("slow")]
    if workers < 2 or not slow:
        return
    size = -(-len(items) // workers)
    blocks: list[list] = [[] for _ in range(workers)]
    for i, item in enumerate(slow):
        blocks[i % workers].append(item)
    for item in items:
        if not item.get_closest_marker("slow"):
            next(block for block in blocks if len(block) < size).append(item)
    items[:] = [item for block in blocks for item in block]


def tiny_config(**overrides) -> dict:
    """The demo config shrunk for unit tests, validated (defaults filled)."""
    with open(REPO / "config" / "demo.yaml") as fh:
        config = yaml.safe_load(fh)
    config["data"]["splits"] = {"train": 48, "val": 32, "test": 32}
    config["model"]["random_init"].update(d_model=32, encoder_ffn_dim=64)
    config["model"]["head_hidden"] = [16]
    # fp32 pinned: the unit tests compare numbers exactly, whatever bf16 units the machine running them has
    config["train"].update(epochs=2, batch_size=8, eval_every_steps=0, early_stopping_patience=0, threads=1, precision="fp32")
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            config[section][name] = value
        else:
            config[section] = value
    if config["data"]["source"] != "simulated":  # the matched filter needs simulated noise: refused for any other source
        config["train"]["variants"].pop("matched-filter", None)
    return validate(copy.deepcopy(config), copy.deepcopy(SCHEMA))


def write_toy_features(root: Path, sizes: dict[str, int]) -> dict[str, Path]:
    """Separable toy feature caches (a bright band in class 1's log-mel), written directly: no LALSuite needed."""
    import numpy as np

    from gwlora.features import write_features

    rng = np.random.default_rng(0)
    dirs = {}
    for split, n in sizes.items():
        y = np.arange(n) % 2
        x = rng.normal(0, 0.3, size=(n, 2, 80, 100)).astype(np.float32)
        x[y == 1, :, 5:20, 40:60] += 1.0
        dirs[split] = root / "features" / split
        write_features(dirs[split], x, y, np.where(y == 1, 10.0, 0.0), split=split, channels=["H1", "L1"])
    return dirs


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A tiny base model, three dataset splits and their features, built through the stage modules."""
    from gwlora.base_model import prepare
    from gwlora.dataset import build_split, save_split
    from gwlora.features import extract_split

    root = tmp_path_factory.mktemp("built")
    config = tiny_config()
    prepare(config["model"], config["seed"], root / "base_model")
    for split in ("train", "val", "test"):
        ds, record = build_split(config["data"], config["seed"], split)
        save_split(ds, record, root / "data" / split)
        extract_split(root / "data" / split, root / "base_model", root / "features" / split, batch_size=16)
    return {"root": root, "config": config}


def assert_figure_drawn(path: Path) -> None:
    """A figure a reader can open: a PNG with more than one colour in it, or an SVG with axes text, not an empty canvas."""
    if path.suffix == ".png":
        from matplotlib.image import imread

        pixels = imread(path)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) >= 100, f"{path.name}: {pixels.shape} is no figure"
        assert np.ptp(pixels[..., :3]) > 0.5, f"{path.name} is blank"  # dark marks on a light canvas, not one flat colour
    elif path.suffix == ".svg":
        import xml.etree.ElementTree as ET

        root = ET.parse(path).getroot()
        assert root.tag.endswith("svg"), f"{path.name} is not an SVG"
        assert any(el.tag.endswith("path") for el in root.iter()), f"{path.name} draws nothing"
    else:
        raise AssertionError(f"{path.name}: not a figure format this study writes")
