import json
import shutil

import numpy as np
import pytest
from transformers import WhisperFeatureExtractor

from gwlora.cli import StageError
from gwlora.dataset import load_split
from gwlora.features import clip_extractor, extract, load_features


def test_cache_shape_and_alignment(built):
    root = built["root"]
    x, y, meta = load_features(root / "features" / "train")
    assert x.shape == (48, 2, 80, 100) and x.dtype == np.float32
    assert meta["channels"] == ["H1", "L1"] and meta["n_frames"] == 100
    ds, _ = load_split(root / "data" / "train")
    assert np.array_equal(y, np.asarray(ds["label"]))


def test_batched_extraction_equals_per_item_call(built):
    """One batched call over windows and channels gives what one call per channel gives."""
    root = built["root"]
    ds, _ = load_split(root / "data" / "val")
    strain = ds.with_format("numpy")[:5]["strain"]
    extractor = clip_extractor(root / "base_model", strain.shape[-1])
    batched = extract(strain, extractor)
    for i in range(5):
        for c in range(2):
            single = extractor(strain[i, c], sampling_rate=16000, return_tensors="np")["input_features"][0]
            np.testing.assert_allclose(batched[i, c], single, atol=1e-5)


def test_clip_features_match_whisper_30s_padding_inside_the_clip(built):
    """Clip-length features are Whisper's 30 s features cut to the clip, but for the last (boundary) frame."""
    root = built["root"]
    ds, _ = load_split(root / "data" / "val")
    strain = ds.with_format("numpy")[:6]["strain"]
    clip = extract(strain, clip_extractor(root / "base_model", strain.shape[-1]))
    padded = WhisperFeatureExtractor.from_pretrained(str(root / "base_model"))
    compared = 0
    for i in range(len(strain)):
        for c in range(2):
            full = padded(strain[i, c], sampling_rate=16000, return_tensors="np")["input_features"][0]
            assert full.shape == (80, 3000)
            if np.isclose(full.max(), clip[i, c].max(), atol=1e-6):  # same per-example normalisation
                np.testing.assert_allclose(clip[i, c, :, :99], full[:, :99], atol=1e-5)
                compared += 1
    assert compared >= 6


def test_cache_is_written_once(built):
    x, _, _ = load_features(built["root"] / "features" / "val", mmap=True)
    assert isinstance(x, np.memmap)
    meta = json.loads((built["root"] / "features" / "val" / "meta.json").read_text())
    assert meta["split"] == "val"


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:-8] + b"\x00" * 8), "does not match the SHA-256"),
        (lambda p: p.unlink(), "is missing"),
    ],
    ids=["truncated", "altered", "missing"],
)
def test_a_damaged_cache_is_named_with_how_to_rebuild_it(built, tmp_path, damage, words):
    """A truncated features.npy once failed with numpy's "Failed to read all data for array" and no path."""
    cache = tmp_path / "train"
    shutil.copytree(built["root"] / "features" / "train", cache)
    damage(cache / "features.npy")
    with pytest.raises(StageError, match=rf"{cache / 'features.npy'}.*{words}.*rebuild it"):
        load_features(cache)


def test_a_corrupt_meta_json_is_named_with_how_to_rebuild_it(built, tmp_path):
    cache = tmp_path / "train"
    shutil.copytree(built["root"] / "features" / "train", cache)
    text = (cache / "meta.json").read_text()
    (cache / "meta.json").write_text(text[: len(text) // 2])
    with pytest.raises(StageError, match=rf"{cache / 'meta.json'} is corrupt, not valid JSON .*delete {cache} .*rebuild it"):
        load_features(cache)


def test_a_cache_without_checksums_is_refused(built, tmp_path):
    cache = tmp_path / "train"
    shutil.copytree(built["root"] / "features" / "train", cache)
    meta = json.loads((cache / "meta.json").read_text())
    del meta["files"]
    (cache / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StageError, match="records no sizes or checksums"):
        load_features(cache)
