"""gwlora.audiofolder_source on tiny WAV folders, local and as an archive served over HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import logging
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from audio_fixtures import TONE, build_all, cols, float_wav_bytes, make_folder, noise, peak_hz, tone, wav_bytes
from gwlora.audio_sources import build_audio_split
from gwlora.audiofolder_source import build_audiofolder_split
from gwlora.cli import StageError
from gwlora.constants import SPLITS
from local_http import serve_directory


def folder_data(path, **overrides) -> dict:
    cfg = {"path": str(path), "positive_class": "chirp", "fractions": {"train": [0, 0.6], "val": [0.6, 0.8], "test": [0.8, 1.0]}, "shuffle_seed": 0}
    cfg.update(overrides)
    return {"source": "audiofolder", "window_seconds": 1.0, "splits": {"train": 100, "val": 100, "test": 100}, "audiofolder": cfg}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("folder") / "clips", extra={"other": 4})


@pytest.fixture
def http_root(tmp_path, monkeypatch):
    """(directory served on 127.0.0.1, base URL, list of requested paths); shut down at teardown."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = tmp_path / "www"
    served.mkdir()
    requests: list[str] = []
    with serve_directory(served, requests) as url:
        yield served, url, requests


def test_audiofolder_splits_shapes_labels_and_stratification(folder, tmp_path):
    data = folder_data(folder)
    built = build_all(build_audiofolder_split, data, tmp_path / "cache")
    seen = []
    for split, (ds, record) in built.items():
        arr = cols(ds)
        assert arr["strain"].shape == (len(ds), 1, 16000) and arr["strain"].dtype == np.float32
        assert np.isnan(arr["snr"]).all()
        assert arr["label"].tolist() == [int(p.startswith("chirp/")) for p in arr["source_id"]]
        assert set(arr["source_label"]) == {"chirp", "noise", "other"}
        assert record["label_names"] == {0: "noise+other", 1: "chirp"}
        assert record["detectors"] == ["audio"] and record["sample_rate"] == 16000
        assert record["n_signal"] == arr["label"].sum() and record["n_windows"] == len(ds)
        for x, y in zip(arr["strain"], arr["label"]):
            if y:
                assert abs(peak_hz(x) - TONE) <= 1.0
        seen += arr["source_id"]
    assert len(seen) == len(set(seen)) == 24  # disjoint, and every file used
    assert "chirp/deep/c00.wav" in seen
    assert [sum(1 for p in cols(built[s][0])["source_id"] if p.startswith("chirp/")) for s in SPLITS] == [6, 2, 2]


def test_audiofolder_is_deterministic_and_cap_keeps_both_classes(folder, tmp_path, caplog):
    data = folder_data(folder)
    a = cols(build_audiofolder_split(data, 0, "train", tmp_path)[0])
    b = cols(build_audiofolder_split(data, 1, "train", tmp_path)[0])
    np.testing.assert_array_equal(a["strain"], b["strain"])
    assert a["source_id"] == b["source_id"]
    data["splits"]["train"] = 2
    capped = cols(build_audiofolder_split(data, 0, "train", tmp_path)[0])
    assert sorted(capped["label"].tolist()) == [0, 1]
    assert set(capped["source_id"]) <= set(a["source_id"])
    data["splits"]["val"] = 50
    with caplog.at_level(logging.WARNING, logger="gwlora.audiofolder_source"):
        build_audiofolder_split(data, 0, "val", tmp_path)
    assert "only 5 files" in caplog.text


def test_audiofolder_padding_and_cropping(tmp_path):
    root = tmp_path / "f"
    for cls in ("chirp", "noise"):
        (root / cls).mkdir(parents=True)
    long = tone(16000, 2.0, 2)
    long[1] *= 0.5  # mono = mean of the channels: 0.75 * the tone
    (root / "chirp" / "long.wav").write_bytes(wav_bytes(long, 16000))
    (root / "noise" / "short.wav").write_bytes(float_wav_bytes(noise(16000, 0.25, 1, seed=3), 16000))
    data = folder_data(root, fractions={"train": [0, 1]})
    ds = cols(build_audiofolder_split(data, 0, "train", tmp_path / "cache")[0])
    by_id = dict(zip(ds["source_id"], ds["strain"]))
    np.testing.assert_allclose(by_id["chirp/long.wav"][0], 0.75 * tone(16000, 1.0, 1)[0], atol=1e-4)
    np.testing.assert_allclose(by_id["noise/short.wav"][0, :4000], noise(16000, 0.25, 1, seed=3)[0], atol=1e-7)
    assert not by_id["noise/short.wav"][0, 4000:].any()


def test_audiofolder_from_url_downloads_extracts_and_reuses_the_cache(folder, tmp_path, http_root):
    served, base, requests = http_root
    archive = served / "clips.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname="clips")  # wrapped in one top-level folder, as archives often are
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    data = folder_data(f"{base}/clips.tar.gz", sha256=sha)
    ds = cols(build_audiofolder_split(data, 0, "train", cache)[0])
    (extracted,) = [p for p in cache.iterdir() if p.is_dir()]
    assert len(requests) == 1 and extracted.name.startswith("clips-") and (extracted / "clips" / "chirp").is_dir()
    assert not list(cache.glob("*.tar.gz"))
    local = cols(build_audiofolder_split(folder_data(folder), 0, "train", cache)[0])
    assert ds["source_id"] == local["source_id"]
    np.testing.assert_array_equal(ds["strain"], local["strain"])
    val = cols(build_audio_split(data, 0, "val", cache)[0])
    assert len(requests) == 1  # the extracted cache is reused without any request
    assert not set(val["source_id"]) & set(ds["source_id"])


@pytest.mark.parametrize("name", ["...tar.gz", "..tar.gz", ".tar.gz.tar.gz", "clips.tar.gz"])
def test_audiofolder_url_named_dot_dot_cannot_replace_the_cache_or_its_siblings(folder, tmp_path, http_root, name):
    """A URL whose archive stem is '..' or '.' (or another archive's) extracts into its own folder, and nothing else goes."""
    served, base, requests = http_root
    with tarfile.open(served / name, "w:gz") as tf:
        tf.add(folder, arcname="clips")
    resources = tmp_path / "resources"
    cache = resources / "audio"
    keep = [resources / "gwosc" / "H-H1_GWOSC.hdf5", cache / "clips" / "clips" / "chirp" / "c00.wav"]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"kept")
    ds = cols(build_audiofolder_split(folder_data(f"{base}/{name}"), 0, "train", cache)[0])
    assert len(ds["source_id"]) > 0
    assert all(path.read_bytes() == b"kept" for path in keep)
    extracted = [p for p in cache.iterdir() if p.is_dir() and p.name != "clips"]
    assert len(extracted) == 1 and extracted[0].parent == cache and not extracted[0].name.startswith(".")


def test_audiofolder_url_refuses_an_escaping_member_and_leaves_nothing(folder, tmp_path, http_root):
    served, base, requests = http_root
    archive = served / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder / "noise" / "n00.wav", arcname="noise/n00.wav")
        tf.add(folder / "noise" / "n01.wav", arcname="../escape.wav")
    cache = tmp_path / "cache"
    with pytest.raises(StageError, match=r"\.\./escape\.wav"):
        build_audiofolder_split(folder_data(f"{base}/evil.tar.gz"), 0, "train", cache)
    assert len(requests) == 1
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "escape.wav").exists()


def test_audiofolder_url_checksum_mismatch_leaves_nothing(folder, tmp_path, http_root):
    served, base, _ = http_root
    with tarfile.open(served / "clips.tar.gz", "w:gz") as tf:
        tf.add(folder, arcname="clips")
    cache = tmp_path / "cache"
    with pytest.raises(StageError, match="checksum mismatch"):
        build_audiofolder_split(folder_data(f"{base}/clips.tar.gz", sha256="0" * 64), 0, "train", cache)
    assert list(cache.iterdir()) == []


def test_audiofolder_errors_name_the_culprit(tmp_path):
    cache = tmp_path / "cache"
    missing = tmp_path / "nowhere"
    with pytest.raises(StageError, match=rf"folder '{re.escape(str(missing))}' not found"):
        build_audiofolder_split(folder_data(missing), 0, "train", cache)

    empty = tmp_path / "empty"
    for cls in ("chirp", "noise"):
        (empty / cls).mkdir(parents=True)
        (empty / cls / "readme.txt").write_text("no audio")
    with pytest.raises(StageError, match=rf"no \.wav files.*'{re.escape(str(empty))}'"):
        build_audiofolder_split(folder_data(empty), 0, "train", cache)

    single = make_folder(tmp_path / "single", n_noise=0)
    with pytest.raises(StageError, match=r"fewer than 2 class folders.*found: chirp"):
        build_audiofolder_split(folder_data(single), 0, "train", cache)

    two = make_folder(tmp_path / "two", n_chirp=1, n_noise=6)
    with pytest.raises(StageError, match=r"positive_class 'bird'.*classes: chirp, noise"):
        build_audiofolder_split(folder_data(two, positive_class="bird"), 0, "train", cache)
    with pytest.raises(StageError, match=r"split 'val' has one class only: 1 windows with label 0 \(noise\) and 0 with label 1"):
        build_audiofolder_split(folder_data(two), 0, "val", cache)
    overlapping = {"train": [0, 0.7], "val": [0.6, 0.8], "test": [0.8, 1]}
    with pytest.raises(StageError, match=r"fractions.*'train' \[0.0, 0.7\] and 'val' \[0.6, 0.8\] overlap"):
        build_audiofolder_split(folder_data(two, fractions=overlapping), 0, "train", cache)
    with pytest.raises(StageError, match=r"fractions has no entry for split 'test'"):
        build_audiofolder_split(folder_data(two, fractions={"train": [0, 1]}), 0, "test", cache)


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b"", r"empty file \(0 bytes\)"),
        (wav_bytes(np.zeros((1, 0)), 8000), r"the clip has no samples"),
        (float_wav_bytes(np.full((1, 800), np.nan), 8000), r"800 samples are NaN or infinite"),
        (wav_bytes(tone(999_983, 0.0001, 1), 999_983), r"sample rate 999983 Hz is outside the 1000 to 384000 Hz"),
    ],
)
def test_audiofolder_refuses_a_bad_wav_by_its_path(tmp_path, content, pattern):
    root = make_folder(tmp_path / "f", n_chirp=3, n_noise=3)
    bad = root / "noise" / "bad.wav"
    bad.write_bytes(content)
    data = folder_data(root, fractions={"train": [0, 1]})
    with pytest.raises(StageError, match=rf"^{re.escape(str(bad))}: {pattern}"):
        build_audiofolder_split(data, 0, "train", tmp_path / "cache")


# --- split folders (the Hugging Face audiofolder layout) -----------------------------------------


def make_split_folders(root: Path, sizes: dict[str, tuple[int, ...]]) -> Path:
    """root/<split folder>/{chirp,noise[,other]}/*.wav with (n_chirp, n_noise[, n_other]) files per split folder."""
    for name, (n_chirp, n_noise, *n_other) in sizes.items():
        make_folder(root / name, n_chirp=n_chirp, n_noise=n_noise, extra={"other": n_other[0]} if n_other else None)
    return root


def split_data(path, **overrides) -> dict:
    data = folder_data(path, **overrides)
    if "fractions" not in overrides:
        del data["audiofolder"]["fractions"]
    return data


FULL = {"train": (8, 6), "validation": (3, 2), "test": (2, 3)}


def test_split_folders_are_read_whole_without_re_splitting(tmp_path, caplog):
    root = make_split_folders(tmp_path / "speech", FULL)
    with caplog.at_level(logging.INFO, logger="gwlora.audiofolder_source"):
        built = build_all(build_audiofolder_split, split_data(root), tmp_path / "cache")
    for split, folder in zip(SPLITS, ("train", "validation", "test")):
        ds, record = built[split]
        arr = cols(ds)
        assert {p.split("/")[0] for p in arr["source_id"]} == {folder}
        assert len(ds) == sum(FULL[folder])  # every file of its folder, nothing more
        assert arr["label"].tolist() == [int(p.split("/")[1] == "chirp") for p in arr["source_id"]]
        assert set(arr["source_label"]) == {"chirp", "noise"}
        assert record["label_names"] == {0: "noise", 1: "chirp"}
        assert f"split '{split}' reads {folder}/ whole (no fractions apply to it)" in caplog.text


def test_split_folders_are_capped_stratified(tmp_path):
    root = make_split_folders(tmp_path / "speech", FULL)
    data = split_data(root)
    full = cols(build_audiofolder_split(data, 0, "train", tmp_path)[0])
    data["splits"]["train"] = 7  # 14 files, 8 chirp: half of each class
    capped = cols(build_audiofolder_split(data, 0, "train", tmp_path)[0])
    assert sorted(capped["label"].tolist()) == [0, 0, 0, 1, 1, 1, 1]
    assert set(capped["source_id"]) < set(full["source_id"])


def test_missing_split_folders_are_carved_out_of_train(tmp_path, caplog):
    root = make_split_folders(tmp_path / "speech", {"train": (20, 20), "test": (2, 3)})
    with caplog.at_level(logging.INFO, logger="gwlora.audiofolder_source"):
        built = {s: cols(ds) for s, (ds, _) in build_all(build_audiofolder_split, split_data(root), tmp_path / "cache").items()}
    ids = {s: set(arr["source_id"]) for s, arr in built.items()}
    assert {p.split("/")[0] for p in ids["train"] | ids["val"]} == {"train"} and not ids["train"] & ids["val"]
    assert (len(ids["train"]), len(ids["val"]), len(ids["test"])) == (34, 6, 5)  # 15 % of each class of train/ for val
    assert "none for val: split 'val' reads its share [0.85, 1.0] of train/, per class" in caplog.text
    explicit = split_data(root, fractions={"train": [0, 0.5], "val": [0.5, 1.0]})
    assert len(build_audiofolder_split(explicit, 0, "val", tmp_path)[0]) == 20
    assert len(build_audiofolder_split(explicit, 0, "test", tmp_path)[0]) == 5


def test_split_folder_aliases_and_a_train_folder_alone(tmp_path):
    root = make_split_folders(tmp_path / "a", {"training": (6, 6), "dev": (2, 2), "eval": (2, 2)})
    assert {cols(build_audiofolder_split(split_data(root), 0, "val", tmp_path)[0])["source_id"][0].split("/")[0]} == {"dev"}
    alone = make_split_folders(tmp_path / "b", {"train": (10, 10)})
    flat = make_folder(tmp_path / "c", n_chirp=10, n_noise=10)
    for split in SPLITS:  # train/ alone: split by the default fractions, as the class folders themselves would be
        a = cols(build_audiofolder_split(split_data(alone), 0, split, tmp_path)[0])
        b = cols(build_audiofolder_split(split_data(flat), 0, split, tmp_path)[0])
        assert a["source_id"] == ["train/" + p for p in b["source_id"]]


def test_split_folders_with_different_classes_share_the_label_names(tmp_path, caplog):
    root = make_split_folders(tmp_path / "speech", {"train": (6, 6), "validation": (2, 2), "test": (2, 2, 2)})
    with caplog.at_level(logging.WARNING, logger="gwlora.audiofolder_source"):
        built = build_all(build_audiofolder_split, split_data(root), tmp_path / "cache")
    assert all(record["label_names"] == {0: "noise+other", 1: "chirp"} for _, record in built.values())
    assert "hold different classes (train/: chirp, noise; validation/: chirp, noise; test/: chirp, noise, other)" in caplog.text


@pytest.mark.parametrize(
    "sizes, overrides, pattern",
    [
        (FULL, {"fractions": {"train": [0, 0.6], "val": [0.6, 0.8], "test": [0.8, 1.0]}}, r"fractions: .* has the split folders train/, validation/, test/, which fix the splits.*remove"),
        ({"train": (6, 6), "test": (2, 2)}, {"fractions": {"train": [0, 0.8], "val": [0.8, 1], "test": [0, 1]}}, r"fractions.test: split 'test' reads the test/ folder .* whole; give fractions only for .*train, val"),
        ({"train": (6, 6), "test": (2, 2)}, {"fractions": {"train": [0, 0.8]}}, r"fractions has no entry for split 'val'"),
        ({"train": (6, 6), "val": (2, 2), "validation": (2, 2)}, {}, r"two folders for split 'val': val/ and validation/"),
        ({"validation": (2, 2), "test": (2, 2)}, {}, r"has split folders \(validation/, test/\) but no train/ folder"),
        ({"train": (6, 6), "chirp": (1, 0)}, {}, r"mixes split folders \(train/\) with other folders of \.wav files \(chirp/\)"),
        ({"train": (6, 6), "test": (0, 3, 2)}, {}, r"positive_class 'chirp' is not a class folder of '.*test' \(classes: noise, other\)"),
    ],
)
def test_split_folder_errors_name_the_culprit(tmp_path, sizes, overrides, pattern):
    root = make_split_folders(tmp_path / "speech", sizes)
    with pytest.raises(StageError, match=pattern):
        build_all(build_audiofolder_split, split_data(root, **overrides), tmp_path / "cache")


@pytest.mark.parametrize("wrapped", [True, False])
def test_split_folders_from_an_archive_url(tmp_path, http_root, wrapped):
    served, base, requests = http_root
    local = make_split_folders(tmp_path / "speech", {"train": (8, 8)} if not wrapped else FULL)
    with tarfile.open(served / "speech.tar.gz", "w:gz") as tf:
        for child in sorted(local.iterdir()):
            tf.add(child, arcname=f"speech/{child.name}" if wrapped else child.name)
    data = split_data(f"{base}/speech.tar.gz")
    for split in SPLITS:
        remote = cols(build_audiofolder_split(data, 0, split, tmp_path / "cache")[0])
        assert remote["source_id"] == cols(build_audiofolder_split(split_data(local), 0, split, tmp_path)[0])["source_id"]
    assert len(requests) == 1
