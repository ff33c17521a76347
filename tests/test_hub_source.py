"""gwlora.hub_source on a tiny save_to_disk dataset: WAV bytes in an Audio column, and array cells."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import datasets
import numpy as np
import pytest

from audio_fixtures import AMP, CLIPS, TONE, build_all, cols, noise, peak_hz, tone, wav_bytes
from gwlora.cli import StageError, read_json
from gwlora.constants import SPLITS
from gwlora.dataset import load_split, save_split
from gwlora.hub_source import build_hub_split


def hub_data(path, **overrides) -> dict:
    """A `data` section as validation leaves it (every default filled)."""
    hub = {
        "id": str(path),
        "config": None,
        "audio_column": "audio",
        "label_column": "animal",
        "splits": {"train": "train", "val": "train", "test": "test"},
        "fractions": {"train": [0.0, 0.75], "val": [0.75, 1.0]},
        "positive_labels": ["cat"],
        "shuffle_seed": 0,
    }
    hub.update(overrides)
    return {"source": "hub", "window_seconds": 1.0, "splits": {"train": 100, "val": 100, "test": 100}, "hub": hub}


ANIMALS = ["dog", "cat", "bird"]  # cat: 440 Hz tone, dog: noise, bird: 1 kHz tone


def hub_rows(n: int, offset: int) -> dict:
    audio, labels = [], []
    for i in range(n):
        rate, ch, sec = CLIPS[i % len(CLIPS)]
        label = (i + offset) % 3
        x = {0: noise(rate, sec, ch, seed=i + offset), 1: tone(rate, sec, ch), 2: tone(rate, sec, ch, freq=1000.0)}[label]
        audio.append({"bytes": wav_bytes(x, rate), "path": f"clip{i + offset}.wav"})
        labels.append(label)
    return {"audio": audio, "animal": labels, "row": list(range(offset, offset + n))}


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory) -> Path:
    """A DatasetDict saved with save_to_disk: WAV bytes in an Audio column, a 3-class ClassLabel."""
    features = datasets.Features(
        {
            "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
            "animal": datasets.ClassLabel(names=ANIMALS),
            "row": datasets.Value("int64"),
        }
    )
    dd = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(hub_rows(n, off), features=features).cast_column("audio", datasets.Audio())
            for split, n, off in (("train", 36, 0), ("test", 12, 100))
        }
    )
    path = tmp_path_factory.mktemp("hub") / "animals"
    dd.save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def array_hub_dir(tmp_path_factory) -> Path:
    """A single Dataset saved with save_to_disk: {"array", "sampling_rate"} cells ([1, n] and [n, C]), labels 0/1."""
    arrays, rates, labels = [], [], []
    for i in range(12):
        rate, ch, sec = CLIPS[i % len(CLIPS)]
        x = tone(rate, sec, ch) if i % 2 else noise(rate, sec, ch, seed=i)
        arrays.append(x.tolist() if ch == 1 else x.T.tolist())  # [1, n] or [n, C]: channels are the short axis
        rates.append(rate)
        labels.append(i % 2)
    ds = datasets.Dataset.from_dict(
        {"sound": [{"array": a, "sampling_rate": r} for a, r in zip(arrays, rates)], "y": labels}
    )
    path = tmp_path_factory.mktemp("hub_arrays") / "arrays"
    ds.save_to_disk(str(path))
    return path


def test_hub_splits_shapes_labels_and_record(hub_dir):
    data = hub_data(hub_dir)
    built = build_all(build_hub_split, data)
    for split, (ds, record) in built.items():
        arr = cols(ds)
        strain, labels = arr["strain"], arr["label"]
        assert strain.shape == (len(ds), 1, 16000) and strain.dtype == np.float32
        assert ds.features["label"].dtype == "int64" and ds.features["snr"].dtype == "float64"
        assert np.isnan(arr["snr"]).all()
        assert labels.tolist() == [int(name == "cat") for name in arr["source_label"]]
        assert record == {
            "split": split,
            "seed": 7,
            "source": "hub",
            "detectors": ["audio"],
            "sample_rate": 16000,
            "n_windows": len(ds),
            "n_signal": int(labels.sum()),
            "data_config": data,
            "label_names": {0: "dog+bird", 1: "cat"},
        }
        for x, name, source_id in zip(strain, arr["source_label"], arr["source_id"]):
            rate, ch, sec = CLIPS[int(source_id.split(":")[1]) % len(CLIPS)]
            if name == "cat":
                assert abs(peak_hz(x) - TONE) <= 1.0
            if name == "bird":
                assert abs(peak_hz(x) - 1000.0) <= 1.0
            if sec < 1.0:
                assert not x[0, 8100:].any()  # 0.5 s clip, zero-padded
            else:
                assert np.abs(x[0, 15000:]).max() > 0.05  # 2 s clip, cropped
    assert [len(built[s][0]) for s in SPLITS] == [27, 9, 12]


def test_saved_split_round_trips_through_the_dataset_contract(hub_dir, tmp_path):
    ds, record = build_hub_split(hub_data(hub_dir), 3, "val")
    save_split(ds, record, tmp_path / "val")
    loaded, build = load_split(tmp_path / "val")
    assert build == read_json(tmp_path / "val" / "build.json")
    assert build["detectors"] == ["audio"] and build["n_windows"] == len(loaded) == 9
    assert build["label_names"] == {"0": "dog+bird", "1": "cat"}  # JSON keys are strings
    batch = loaded.with_format("numpy")[0:4]
    assert batch["strain"].shape == (4, 1, 16000) and batch["strain"].dtype == np.float32
    np.testing.assert_array_equal(batch["strain"], cols(ds)["strain"][:4])


def test_hub_splits_are_disjoint_deterministic_and_independent_of_the_seed(hub_dir):
    data = hub_data(hub_dir)
    first = build_all(build_hub_split, data)
    ids = [set(cols(first[s][0])["source_id"]) for s in SPLITS]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert ids[0] | ids[1] == {f"train:{i}" for i in range(36)}
    again, val = cols(build_hub_split(data, 123, "val")[0]), cols(first["val"][0])
    np.testing.assert_array_equal(again["strain"], val["strain"])
    assert again["source_id"] == val["source_id"]
    other = build_hub_split(hub_data(hub_dir, shuffle_seed=1), 7, "val")[0]
    assert cols(other)["source_id"] != val["source_id"]


def test_hub_cap_takes_the_first_after_the_shuffle_and_warns_when_short(hub_dir, caplog):
    data = hub_data(hub_dir)
    full = cols(build_hub_split(data, 0, "train")[0])
    data["splits"]["train"] = 10
    caplog.clear()
    capped = cols(build_hub_split(data, 0, "train")[0])
    assert capped["source_id"] == full["source_id"][:10]
    assert "fewer than" not in caplog.text
    data["splits"]["test"] = 50
    with caplog.at_level(logging.WARNING, logger="gwlora.hub_source"):
        assert len(build_hub_split(data, 0, "test")[0]) == 12
    assert "only 12 examples" in caplog.text


def test_hub_positive_labels_by_index_and_name(hub_dir):
    ds, record = build_hub_split(hub_data(hub_dir, positive_labels=[1, "bird"]), 0, "test")
    arr = cols(ds)
    assert arr["label"].tolist() == [int(name in ("cat", "bird")) for name in arr["source_label"]]
    assert record["label_names"] == {0: "dog", 1: "cat+bird"}


def test_hub_array_cells_and_binary_labels(array_hub_dir):
    data = hub_data(
        array_hub_dir,
        audio_column="sound",
        label_column="y",
        splits={"train": "train", "val": "train", "test": "train"},
        fractions={"train": [0, 0.5], "val": [0.5, 0.75], "test": [0.75, 1]},
    )
    del data["hub"]["positive_labels"]
    built = build_all(build_hub_split, data)
    for ds, record in built.values():
        arr = cols(ds)
        assert arr["strain"].shape[1:] == (1, 16000)
        for x, y in zip(arr["strain"], arr["label"]):
            if y == 1:
                assert abs(peak_hz(x) - TONE) <= 1.0
                assert np.max(np.abs(x)) == pytest.approx(AMP, rel=0.03)
        assert record["label_names"] == {0: "0", 1: "1"}
    assert sum(len(ds) for ds, _ in built.values()) == 12


@pytest.mark.parametrize(
    "split, overrides, pattern",
    [
        ("train", {"audio_column": "wave"}, r"audio_column: column 'wave' not found.*columns: audio, animal, row"),
        ("train", {"label_column": "kind"}, r"label_column: column 'kind' not found.*columns: audio, animal, row"),
        ("test", {"splits": {"train": "train", "val": "train", "test": "validation"}}, r"splits.test: source split 'validation' not found.*available: test, train"),
        ("val", {"fractions": {"train": [0, 0.8], "val": [0.7, 1.0]}}, r"'train' \[0.0, 0.8\] and 'val' \[0.7, 1.0\].*overlap"),
        ("train", {"fractions": {"train": [0, 0.8]}}, r"'train'.*'val'.*both read source split 'train'.*overlap"),
        ("train", {"fractions": {"train": [0.5, 1.2], "val": [0.0, 0.5]}}, r"fractions.train: .*0 <= start < stop <= 1"),
        ("test", {"positive_labels": ["dog", "cat", "bird"]}, r"split 'test' has one class only: 0 windows with label 0.*12 with label 1"),
        ("train", {"positive_labels": ["cow"]}, r"'cow' is not a class of 'animal'.*dog"),
        ("train", {"positive_labels": None}, r"'animal'.*not binary"),
    ],
)
def test_hub_errors_name_the_culprit(hub_dir, split, overrides, pattern):
    data = hub_data(hub_dir, **overrides)
    if data["hub"]["positive_labels"] is None:
        del data["hub"]["positive_labels"]
    with pytest.raises(StageError, match=pattern):
        build_hub_split(data, 0, split)


def test_hub_array_cell_with_nan_or_no_samples_is_named(tmp_path):
    """Three rows, one per split: the NaN row and the empty row each stop their split, named by row."""
    ds = datasets.Dataset.from_dict(
        {
            "sound": [{"array": [0.1, 0.2], "sampling_rate": 8000}, {"array": [0.1, float("nan")], "sampling_rate": 8000}, {"array": [], "sampling_rate": 8000}],
            "y": [0, 1, 1],
        }
    )
    ds.save_to_disk(str(tmp_path / "bad"))
    data = hub_data(tmp_path / "bad", audio_column="sound", label_column="y", splits={"train": "train", "val": "train", "test": "train"}, fractions={"train": [0, 0.3], "val": [0.3, 0.6], "test": [0.6, 1]}, shuffle_seed=0)
    del data["hub"]["positive_labels"]
    messages = []
    for split in SPLITS:
        with pytest.raises(StageError) as caught:
            build_hub_split(data, 0, split)
        messages.append(str(caught.value))
    assert any(re.search(r"bad split 'train' row 1: 1 samples are NaN or infinite", m) for m in messages), messages
    assert any(re.search(r"bad split 'train' row 2: the clip has no samples", m) for m in messages), messages


def test_hub_unknown_id_is_named(tmp_path):
    with pytest.raises(StageError, match=r"data.hub.id '.*no-such-dataset'"):
        build_hub_split(hub_data(tmp_path / "no-such-dataset"), 0, "train")
