"""gwlora.audio_sources on tiny WAV fixtures: a save_to_disk hub dataset, an audio folder, and its archive over HTTP."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import struct
import tarfile
import wave
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile

from gwlora.audio_sources import (
    build_audio_split,
    build_audiofolder_split,
    build_hub_split,
    decode_audio_bytes,
    partition,
    to_window,
)
from gwlora.cli import StageError, read_json
from gwlora.constants import SPLITS
from gwlora.dataset import load_split, save_split
from local_http import serve_directory

TONE = 440.0
AMP = 0.5
CLIPS = [(8000, 1, 0.5), (22050, 2, 2.0), (8000, 2, 2.0), (22050, 1, 0.5), (16000, 1, 2.0)]  # (rate, channels, s)


# --- fixture helpers --------------------------------------------------------------------


def tone(rate: int, seconds: float, channels: int, freq: float = TONE, amp: float = AMP) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return np.tile(amp * np.sin(2 * np.pi * freq * t), (channels, 1))


def noise(rate: int, seconds: float, channels: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, (channels, round(rate * seconds)))


def wav_bytes(x: np.ndarray, rate: int, width: int = 2) -> bytes:
    """[C, n] float in [-1, 1) -> integer PCM WAV bytes via `wave`."""
    x = np.atleast_2d(x)
    if width == 1:
        ints = np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8)
        raw = ints.T.tobytes()
    elif width == 3:
        ints = np.clip(np.round(x * 2**23), -(2**23), 2**23 - 1).astype("<i4").T.reshape(-1)
        raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    else:
        dtype = {2: "<i2", 4: "<i4"}[width]
        scale = 2 ** (8 * width - 1)
        raw = np.clip(np.round(x * scale), -scale, scale - 1).astype(dtype).T.tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return buf.getvalue()


def float_wav_bytes(x: np.ndarray, rate: int, extensible: bool = False) -> bytes:
    """[C, n] -> 32-bit IEEE float WAV (format 3, or WAVE_FORMAT_EXTENSIBLE with the float sub-format)."""
    x = np.atleast_2d(x)
    data = x.T.astype("<f4").tobytes()
    c = x.shape[0]
    if extensible:
        guid = struct.pack("<H", 3) + bytes.fromhex("000000001000800000aa00389b71")
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, c, rate, rate * 4 * c, 4 * c, 32, 22, 32, 0) + guid
    else:
        fmt = struct.pack("<HHIIHH", 3, c, rate, rate * 4 * c, 4 * c, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def peak_hz(strain: np.ndarray) -> float:
    x = np.asarray(strain, dtype=np.float64).reshape(-1)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / 16000)[np.argmax(spectrum)])


def make_folder(root: Path, n_chirp: int = 10, n_noise: int = 10, extra: dict[str, int] | None = None) -> Path:
    """root/chirp/*.wav (440 Hz tones, one in a subfolder), root/noise/*.wav, optional other classes."""
    for i in range(n_chirp):
        rate, ch, sec = CLIPS[i % len(CLIPS)]
        sub = root / "chirp" / ("deep" if i == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"c{i:02d}.wav").write_bytes(wav_bytes(tone(rate, sec, ch), rate))
    for name, n in {"noise": n_noise, **(extra or {})}.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rate, ch, sec = CLIPS[i % len(CLIPS)]
            (root / name / f"{name[0]}{i:02d}.wav").write_bytes(wav_bytes(noise(rate, sec, ch, seed=i), rate))
    return root


def folder_data(path, **overrides) -> dict:
    cfg = {"path": str(path), "positive_class": "chirp", "fractions": {"train": [0, 0.6], "val": [0.6, 0.8], "test": [0.8, 1.0]}, "shuffle_seed": 0}
    cfg.update(overrides)
    return {"source": "audiofolder", "window_seconds": 1.0, "splits": {"train": 100, "val": 100, "test": 100}, "audiofolder": cfg}


def hub_data(path, **overrides) -> dict:
    hub = {
        "id": str(path),
        "config": None,
        "audio_column": "audio",
        "label_column": "animal",
        "splits": {"train": "train", "val": "train", "test": "test"},
        "fractions": {"train": [0.0, 0.75], "val": [0.75, 1.0]},
        "positive_labels": ["cat"],
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


def cols(ds: datasets.Dataset) -> dict:
    """All columns materialised: numpy arrays, the string columns as lists."""
    c = ds.with_format("numpy")[:]
    return {k: (v.tolist() if k.startswith("source") else v) for k, v in c.items()}


def build_all(builder, data, *args) -> dict:
    return {split: builder(data, 7, split, *args) for split in SPLITS}


# --- decoding and conditioning --------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_integer_pcm_widths_decode_to_the_same_signal(width):
    x = tone(8000, 0.1, 2, amp=0.4)
    y, rate = decode_audio_bytes(wav_bytes(x, 8000, width), "clip.wav")
    assert rate == 8000 and y.shape == x.shape
    assert np.max(np.abs(y - x)) < (1.5 / 2 ** (8 * width - 1) if width > 1 else 0.01)


@pytest.mark.parametrize("extensible", [False, True])
def test_float_wav_decodes(extensible):
    x = tone(22050, 0.1, 2, amp=1.5)  # float WAV may exceed 1: amplitudes are kept
    y, rate = decode_audio_bytes(float_wav_bytes(x, 22050, extensible), "f.wav")
    assert rate == 22050
    np.testing.assert_allclose(y, x.astype(np.float32), rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "fmt, subtype, channels, tol",
    [("WAV", "DOUBLE", 2, 1e-12), ("WAVEX", "PCM_24", 6, 2e-7), ("WAVEX", "DOUBLE", 3, 1e-12), ("FLAC", "PCM_16", 2, 2e-5)],
)
def test_other_layouts_and_formats_decode(fmt, subtype, channels, tol):
    """64-bit float, 6-channel 24-bit WAVE_FORMAT_EXTENSIBLE and FLAC: libsndfile reads them all."""
    x = tone(11025, 0.1, channels, amp=0.4) * np.linspace(1.0, 0.5, channels)[:, None]
    buf = io.BytesIO()
    soundfile.write(buf, x.T, 11025, format=fmt, subtype=subtype)
    y, rate = decode_audio_bytes(buf.getvalue(), f"clip.{fmt.lower()}")
    assert rate == 11025 and y.shape == x.shape
    np.testing.assert_allclose(y, x, rtol=0, atol=tol)


def test_undecodable_audio_names_the_file_and_format():
    with pytest.raises(StageError, match=r"^mystery\.flac: cannot decode audio: .*unimplemented format"):
        decode_audio_bytes(b"fLaC" + bytes(64), "mystery.flac")
    adpcm = bytearray(float_wav_bytes(tone(8000, 0.01, 1), 8000))
    adpcm[20:22] = struct.pack("<H", 2)  # MS ADPCM with 32 bits per sample: nonsense
    with pytest.raises(StageError, match=r"^odd\.wav: cannot decode audio: .*ADPCM"):
        decode_audio_bytes(bytes(adpcm), "odd.wav")


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 16000])
def test_resampling_keeps_the_tone_and_its_amplitude(rate):
    out = to_window(tone(rate, 1.5, 1), rate, 16000)
    assert out.shape == (1, 16000) and out.dtype == np.float32
    assert abs(peak_hz(out) - TONE) <= 1.0
    assert np.max(np.abs(out[0, 1000:-1000])) == pytest.approx(AMP, rel=0.02)


def test_window_crops_the_start_pads_with_zeros_and_averages_channels():
    x = np.stack([np.linspace(-1, 1, 40000), np.linspace(1, 0, 40000)])
    np.testing.assert_allclose(to_window(x, 16000, 16000)[0], x.mean(axis=0)[:16000], atol=1e-6)
    short = to_window(tone(16000, 0.25, 2), 16000, 16000)
    np.testing.assert_allclose(short[0, :4000], tone(16000, 0.25, 1)[0], atol=1e-6)
    assert not short[0, 4000:].any()


def test_partition_is_disjoint_proportional_and_reaches_every_split():
    ranges = {"train": (0.0, 0.7), "val": (0.7, 0.85), "test": (0.85, 1.0)}
    parts = partition(100, ranges)
    assert [len(parts[s]) for s in SPLITS] == [70, 15, 15]
    assert sorted(i for r in parts.values() for i in r) == list(range(100))
    assert all(len(r) == 1 for r in partition(3, ranges).values())
    gap = partition(10, {"train": (0.0, 0.5), "test": (0.9, 1.0)})
    assert list(gap["train"]) == [0, 1, 2, 3, 4] and list(gap["test"]) == [9]


# --- source `hub` ------------------------------------------------------------------------


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
    with caplog.at_level(logging.WARNING, logger="gwlora.audio_sources"):
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


def test_hub_unknown_id_is_named(tmp_path):
    with pytest.raises(StageError, match=r"data.hub.id '.*no-such-dataset'"):
        build_hub_split(hub_data(tmp_path / "no-such-dataset"), 0, "train")


# --- source `audiofolder` ------------------------------------------------------------------


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
    with caplog.at_level(logging.WARNING, logger="gwlora.audio_sources"):
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
