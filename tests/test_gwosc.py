"""The `gwosc` source end to end against a local HTTP server serving GWOSC-format files."""

import copy
import hashlib
import json
import threading

import numpy as np
import pytest

from conftest import SCHEMA, tiny_config
from gwlora import gw, gwosc_source
from gwlora.cli import StageError
from gwlora.config import ConfigError, validate
from gwlora.dataset import build_split
from gwlora.download import DownloadError
from gwosc_fixtures import write_gwosc_file
from local_http import serve_directory

T0 = 1256655616
DURATION = 64
DETECTORS = ("H1", "L1")
SEGMENTS = {"train": [[T0, T0 + 64]], "val": [[T0 + 64, T0 + 128]], "test": [[T0 + 128, T0 + 192]]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("gwosc-server")
    for d in DETECTORS:
        for k in range(3):
            start = T0 + k * DURATION
            # H1 loses CBC_CAT2 for seconds 10-11 of the first file; L1 has NaNs in seconds 40-41 of it
            bad = (10, 11) if (d, k) == ("H1", 0) else ()
            nan = (40, 41) if (d, k) == ("L1", 0) else ()
            write_gwosc_file(root / f"{d[0]}-{d}_GWOSC_4KHZ_R1-{start}-{DURATION}.hdf5", d, start, DURATION, bad_seconds=bad, nan_seconds=nan)
    with serve_directory(root) as url:
        yield root, url


def gwosc_data(server, **overrides):
    root, url = server
    config = tiny_config()
    data = config["data"]
    data["source"] = "gwosc"
    config["train"]["variants"].pop("matched-filter", None)  # refused on gwosc: its PSD is estimated per stretch
    data["splits"] = {"train": 16, "val": 8, "test": 8}
    data["gwosc"] = {
        "segments": copy.deepcopy(SEGMENTS),
        "files": {d: [{"url": f"{url}/{p.name}"} for p in sorted(root.glob(f"?-{d}_*.hdf5"))] for d in DETECTORS},
        "min_stretch_seconds": 16,  # the fixture's files are 64 s long
        **overrides,
    }
    return validate(config, copy.deepcopy(SCHEMA))["data"]


@pytest.fixture(scope="module")
def fetched(server, tmp_path_factory):
    data = gwosc_data(server)
    manifest = tmp_path_factory.mktemp("cache") / "manifest-test.json"
    gwosc_source.fetch(list(DETECTORS), data["gwosc"], manifest, progress=False)
    return data, manifest


def test_fetch_downloads_validates_and_records_checksums(server, fetched):
    root, _ = server
    data, manifest_path = fetched
    manifest = json.loads(manifest_path.read_text())
    assert len(manifest) == 6
    for name, entry in manifest.items():
        assert entry["sha256"] == hashlib.sha256((root / name).read_bytes()).hexdigest()
        assert entry["detector"] == name[2:4]
    files = gwosc_source.cached_files(manifest_path, list(DETECTORS))
    assert [f.gps_start for f in files["L1"]] == [T0, T0 + 64, T0 + 128]
    assert files["H1"][0].sample_rate == 4096


def test_fetch_again_uses_the_cache(server, fetched, monkeypatch):
    data, manifest_path = fetched
    calls = []
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError("network")))
    gwosc_source.fetch(list(DETECTORS), data["gwosc"], manifest_path, progress=False)
    assert calls == []


def test_two_experiments_fetch_into_one_cache_at_once(server, tmp_path):
    """Both download the same files through a slow server: each file is fetched once, both manifests are complete."""
    root, _ = server
    requests: list[str] = []
    with serve_directory(root, requests, pause=0.02) as url:  # ~0.7 s per 2 MiB file
        gwosc = gwosc_data((root, url))["gwosc"]
        gwosc["files"] = {d: gwosc["files"][d][:1] for d in DETECTORS}
        cache = tmp_path / "gwosc"
        errors: list[BaseException] = []

        def experiment(name):
            try:
                gwosc_source.fetch(list(DETECTORS), gwosc, cache / f"manifest-{name}.json", progress=False)
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                errors.append(exc)

        threads = [threading.Thread(target=experiment, args=(n,), daemon=True) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sorted(requests) == sorted(set(requests)) and len(requests) == 2  # each file once
    a, b = (json.loads((cache / f"manifest-{n}.json").read_text()) for n in ("a", "b"))
    assert a == b and len(a) == 2
    assert sorted(p.name for p in cache.iterdir()) == sorted([*a, "manifest-a.json", "manifest-b.json"])


def test_download_deadline_from_the_config(server, tmp_path):
    root, _ = server
    with serve_directory(root, pause=0.05) as url:  # ~1.6 s per file
        gwosc = gwosc_data((root, url), download_deadline_s=0.5)["gwosc"]
        first = gwosc["files"]["H1"][0]["url"]
        with pytest.raises(DownloadError, match="deadline of 0.5 s") as info:
            gwosc_source.fetch(["H1"], gwosc, tmp_path / "manifest.json", progress=False)
    assert first in str(info.value)
    assert [p.suffix for p in tmp_path.iterdir()] == [".part"]  # kept for the next run to resume
    assert gwosc_data(server)["gwosc"]["download_deadline_s"] is None  # the default: the downloader's own
    with pytest.raises(ConfigError, match="download_deadline_s"):
        gwosc_data(server, download_deadline_s=0)


def test_checksum_mismatch_is_rejected_and_cache_untouched(server, tmp_path):
    data = gwosc_data(server)
    data["gwosc"]["files"]["H1"][0]["sha256"] = "0" * 64
    manifest = tmp_path / "manifest.json"
    with pytest.raises(DownloadError, match="sha256|SHA-256|checksum"):
        gwosc_source.fetch(["H1"], data["gwosc"], manifest, progress=False)
    assert not any(p.suffix == ".hdf5" for p in tmp_path.iterdir())


def test_wrong_detector_file_is_rejected(server, tmp_path):
    data = gwosc_data(server)
    data["gwosc"]["files"]["H1"] = data["gwosc"]["files"]["L1"]
    with pytest.raises(DownloadError, match="strain of L1, expected H1"):
        gwosc_source.fetch(["H1"], data["gwosc"], tmp_path / "manifest.json", progress=False)


def test_stretches_honour_quality_nans_and_exclusions(fetched):
    data, manifest = fetched
    files = gwosc_source.cached_files(manifest, list(DETECTORS))
    stretches = gwosc_source.coincident_stretches(files, SEGMENTS["train"], ["DATA", "CBC_CAT1", "CBC_CAT2"], [[T0 + 20, T0 + 21.5]], 5)
    assert stretches == [(T0, T0 + 10), (T0 + 12, T0 + 20), (T0 + 22, T0 + 40), (T0 + 42, T0 + 64)]
    # without CBC_CAT2 required, H1's flagged seconds count as good
    loose = gwosc_source.coincident_stretches(files, SEGMENTS["train"], ["DATA"], [], 5)
    assert loose == [(T0, T0 + 40), (T0 + 42, T0 + 64)]


def test_unknown_quality_flag_is_named(fetched):
    data, manifest = fetched
    files = gwosc_source.cached_files(manifest, list(DETECTORS))
    with pytest.raises(StageError, match="CBC_CAT9"):
        gwosc_source.coincident_stretches(files, SEGMENTS["train"], ["CBC_CAT9"], [], 5)


def test_gwosc_split_windows_lie_in_their_segment_and_hit_their_snr(fetched):
    data, manifest = fetched
    ds, record = build_split(data, 0, "val", manifest)
    ds = ds.with_format("numpy")
    assert record["source"] == "gwosc" and len(ds) == 8
    gps = np.asarray(ds["gps_time"])
    (start, end), = SEGMENTS["val"]
    assert np.all((gps >= start) & (gps + 1 <= end)) and len(set(gps)) == 8  # distinct windows of this split only
    strain = np.stack(ds["strain"])
    assert strain.shape == (8, 2, 16000) and np.isfinite(strain).all()
    noise = strain[np.asarray(ds["label"]) == 0]
    assert 0.7 < noise.std() < 1.3  # whitened by its own Welch PSD, band-passed


def test_gwosc_split_is_deterministic(fetched):
    data, manifest = fetched
    a, _ = build_split(data, 1, "test", manifest)
    b, _ = build_split(data, 1, "test", manifest)
    assert np.array_equal(np.stack(a.with_format("numpy")["strain"]), np.stack(b.with_format("numpy")["strain"]))


def test_short_stretches_are_not_used(fetched):
    data, manifest = fetched
    data = copy.deepcopy(data)
    data["gwosc"]["min_stretch_seconds"] = 30  # train's good stretches are 10, 28 and 22 s long
    data["splits"]["train"] = 4
    with pytest.raises(StageError, match=r"holds only 0 .* stretch\(es\) of at least 30"):
        build_split(data, 0, "train", manifest)


def test_not_enough_good_data_names_the_split(fetched):
    data, manifest = fetched
    data = copy.deepcopy(data)
    data["splits"]["train"] = 500
    with pytest.raises(StageError, match=r"split 'train': needs 500 windows .* data.gwosc.segments.train"):
        build_split(data, 0, "train", manifest)


def test_welch_psd_of_design_noise_matches_the_design_psd():
    fs, n = 2048, 8 * 2048
    psd = gw.design_psd("aLIGODesignSensitivityP1200087", 64 * fs, fs, 15)
    x = gw.coloured_noise(np.random.default_rng(0), psd, 64 * fs, fs)
    estimate = gw.welch_psd(x, fs, n, 15)
    design = gw.design_psd("aLIGODesignSensitivityP1200087", n, fs, 15)
    freqs = np.fft.rfftfreq(n, 1 / fs)
    band = (freqs > 30) & (freqs < 900)
    ratio = estimate[band] / design[band]
    assert abs(np.median(ratio) - 1) < 0.05  # unbiased
    assert np.mean(np.abs(ratio - 1) < 0.5) > 0.95  # and within the scatter of ~30 averaged 4 s segments


@pytest.mark.parametrize(
    "segments, message",
    [
        ({"train": [[T0, T0 + 64]], "val": [[T0 + 60, T0 + 128]], "test": [[T0 + 128, T0 + 192]]}, "overlaps"),
        ({"train": [[T0 + 64, T0]], "val": [[T0 + 64, T0 + 128]], "test": [[T0 + 128, T0 + 192]]}, "start"),
    ],
)
def test_bad_segments_fail_validation(server, segments, message):
    with pytest.raises(ConfigError, match=message):
        gwosc_data(server, segments=segments)


def test_locate_asks_gwosc_for_each_detector_and_segment(monkeypatch):
    calls = []

    def fake_get_urls(detector, start, end, **kwargs):
        calls.append((detector, start, end, kwargs["host"]))
        return [f"https://example.invalid/{detector}-{start}.hdf5"]

    monkeypatch.setattr("gwosc.locate.get_urls", fake_get_urls)
    cfg = {"segments": SEGMENTS, "source_sample_rate": 4096, "host": "https://gwosc.org", "files": None}
    found = gwosc_source.locate(["H1", "L1"], cfg)
    assert [f["url"] for f in found["H1"]] == [f"https://example.invalid/H1-{s[0][0]}.hdf5" for s in SEGMENTS.values()]
    assert len(calls) == 6 and {c[3] for c in calls} == {"https://gwosc.org"}


def test_segment_without_data_is_named(monkeypatch):
    monkeypatch.setattr("gwosc.locate.get_urls", lambda *a, **k: [])
    cfg = {"segments": SEGMENTS, "source_sample_rate": 4096, "host": "https://gwosc.org", "files": None}
    with pytest.raises(StageError, match=f"no H1 strain for GPS segment {T0}-{T0 + 64}"):
        gwosc_source.locate(["H1"], cfg)


@pytest.mark.slow
def test_workflow_runs_on_gwosc_data_from_a_server(server, tmp_path):
    """The whole DAG with data.source gwosc: download (a local rule) -> dataset -> ... -> deck."""
    import yaml

    from test_workflow import snakemake, workflow_copy

    root = workflow_copy(tmp_path)
    config = yaml.safe_load((root / "config" / "demo.yaml").read_text())
    config["experiment"] = "gwosc-test"
    data = gwosc_data(server)
    config["data"] = {k: data[k] for k in ("source", "detectors", "sample_rate", "window_seconds", "segment_seconds", "band", "splits", "snr", "injection", "gwosc")}
    config["train"]["variants"] = {"frozen": {"lr": 1e-3}, "lora": {"ranks": [2], "lr": 5e-4}}
    config["train"]["epochs"] = 1
    (root / "gwosc.yaml").write_text(yaml.safe_dump(config))
    snakemake(root, "--cores", "2", "--configfile", "gwosc.yaml")
    manifest = json.loads((root / "resources" / "gwosc" / "manifest-gwosc-test.json").read_text())
    assert len(manifest) == 6
    results = root / "results" / "gwosc-test"
    assert json.loads((results / "data" / "train" / "build.json").read_text())["source"] == "gwosc"
    assert (results / "slides" / "index.html").exists()
    again = snakemake(root, "-n", "--cores", "2", "--configfile", "gwosc.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr
