"""gwlora.download against a scriptable HTTP server on 127.0.0.1: resume, retries, checks, manifests, archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import socket
import struct
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gwlora import download as dl
from gwlora.cli import StageError
from gwlora.download import (
    DownloadError,
    cache_name,
    download,
    extract_archive,
    manifest_entry,
    read_manifest,
    sha256_of,
    url_file_name,
    verify_manifest,
    write_manifest,
)

SIZE = 3_000_000
DATA = random.Random(20150914).randbytes(SIZE)
SHA = hashlib.sha256(DATA).hexdigest()
CUT = 1_000_000
FAST = {"backoff": 0.01, "timeout": 5.0, "progress": False, "chunk_size": 1 << 16}


class Server:
    """A file server whose behaviour each test scripts.

    `plan` lists one action per request, consumed in order, then every request
    is served normally: an int status (e.g. 500) answers with that error,
    ("cut", n) sends the full Content-Length but only n bytes and closes,
    ("reset", n) does the same but resets the connection, ("stall", n) sends n
    bytes then stops sending until the test ends. `status` answers every
    request with that error, `ignore_range` answers 200 with the whole file,
    `corrupt` serves the file with one byte changed. `pace` = (n, seconds)
    sends the body n bytes at a time with a pause after each piece (a slow or
    trickling server); `close_delimited` sends no Content-Length (and ignores
    ranges): the end of the body is the end of the connection.
    """

    def __init__(self) -> None:
        self.data = DATA
        self.plan: list = []
        self.status: int | None = None
        self.ignore_range = False
        self.corrupt = False
        self.pace: tuple[int, float] | None = None
        self.close_delimited = False
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None

    def url(self, path: str = "/strain.hdf5") -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    @property
    def ranges(self) -> list[str | None]:
        return [r["range"] for r in self.requests]


def make_handler(server: Server):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            with server.lock:
                server.requests.append(
                    {"path": self.path, "range": self.headers.get("Range"), "headers": dict(self.headers)}
                )
                action = server.plan.pop(0) if server.plan else None
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/strain.hdf5")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if isinstance(action, int) or server.status is not None:
                code = action if isinstance(action, int) else server.status
                body = f"error {code}\n".encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            data = server.data
            if server.corrupt:
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            start, status = 0, 200
            rng = self.headers.get("Range")
            if rng and not (server.ignore_range or server.close_delimited):
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            if server.close_delimited:
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if action is None:
                self.send_body(body)
                return
            kind, n = action
            self.wfile.write(body[:n])
            if kind == "stall":
                server.release.wait(5)
            elif kind == "reset":  # RST instead of FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True

        def send_body(self, body: bytes) -> None:
            if server.pace is None:
                self.wfile.write(body)
                return
            piece, pause = server.pace
            try:
                for i in range(0, len(body), piece):
                    self.wfile.write(body[i : i + piece])
                    self.wfile.flush()
                    if server.release.wait(pause):
                        return
            except OSError:  # the client gave up
                self.close_connection = True

    return Handler


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    srv = Server()
    srv.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(srv))
    srv.httpd.daemon_threads = True
    thread = threading.Thread(target=srv.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.httpd.shutdown()
        srv.httpd.server_close()
        thread.join(5)


@pytest.fixture
def sleeps(monkeypatch):
    """Record the backoff sleeps instead of sleeping."""
    recorded: list[float] = []
    monkeypatch.setattr(dl, "_sleep", recorded.append)
    return recorded


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- download -------------------------------------------------------------------


@pytest.mark.parametrize("progress", [False, True])
def test_normal_download(server, tmp_path, progress):
    dest = tmp_path / "sub" / "strain.hdf5"
    out = download(server.url(), dest, sha256=SHA, **{**FAST, "progress": progress})
    assert out == dest
    assert dest.read_bytes() == DATA
    assert sha256_of(dest) == SHA
    assert leftovers(dest.parent) == ["strain.hdf5"]
    assert len(server.requests) == 1 and server.ranges == [None]
    assert "gwlora" in server.requests[0]["headers"]["User-Agent"]


def test_download_without_checksum_and_redirect(server, tmp_path):
    dest = tmp_path / "strain.hdf5"
    download(server.url("/redirect"), dest, **FAST)
    assert dest.read_bytes() == DATA
    assert [r["path"] for r in server.requests] == ["/redirect", "/strain.hdf5"]


@pytest.mark.parametrize("kind", ["cut", "reset", "stall"])
def test_truncated_transfer_resumes(server, tmp_path, sleeps, kind, caplog):
    server.plan = [(kind, CUT)]
    dest = tmp_path / "strain.hdf5"
    timeout = 0.5 if kind == "stall" else FAST["timeout"]
    with caplog.at_level("WARNING", logger="gwlora.download"):
        download(server.url(), dest, sha256=SHA, **{**FAST, "timeout": timeout})
    assert dest.read_bytes() == DATA
    assert len(server.requests) == 2
    first, second = server.ranges
    assert first is None
    resumed_from = int(second.removeprefix("bytes=").rstrip("-"))
    assert second == f"bytes={resumed_from}-"
    assert 0 < resumed_from <= CUT
    assert sleeps == [0.01]
    assert "attempt 1/5 failed" in caplog.text
    assert leftovers(tmp_path) == ["strain.hdf5"]


def test_part_from_earlier_run_is_resumed(server, tmp_path):
    dest = tmp_path / "strain.hdf5"
    dest.with_name("strain.hdf5.part").write_bytes(DATA[:1234567])
    download(server.url(), dest, sha256=SHA, **FAST)
    assert server.ranges == ["bytes=1234567-"]
    assert dest.read_bytes() == DATA
    assert leftovers(tmp_path) == ["strain.hdf5"]


def test_part_resumed_when_server_ignores_range(server, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "strain.hdf5"
    dest.with_name("strain.hdf5.part").write_bytes(DATA[:1234567])
    download(server.url(), dest, sha256=SHA, **FAST)
    assert server.ranges == ["bytes=1234567-"]  # asked, got 200 with the whole file, started over
    assert dest.read_bytes() == DATA
    assert leftovers(tmp_path) == ["strain.hdf5"]


def test_complete_part_gets_416_and_is_verified(server, tmp_path):
    dest = tmp_path / "strain.hdf5"
    dest.with_name("strain.hdf5.part").write_bytes(DATA)
    download(server.url(), dest, sha256=SHA, **FAST)
    assert server.ranges == [f"bytes={SIZE}-"]
    assert dest.read_bytes() == DATA


def test_oversized_stale_part_is_discarded(server, tmp_path, sleeps):
    dest = tmp_path / "strain.hdf5"
    dest.with_name("strain.hdf5.part").write_bytes(DATA + b"stale tail")
    download(server.url(), dest, sha256=SHA, **FAST)
    assert server.ranges == [f"bytes={SIZE + 10}-", None]
    assert dest.read_bytes() == DATA


def test_stale_part_with_wrong_bytes_restarts_from_scratch(server, tmp_path):
    dest = tmp_path / "strain.hdf5"
    dest.with_name("strain.hdf5.part").write_bytes(b"\0" * 1000)  # an older version of the file
    download(server.url(), dest, sha256=SHA, **FAST)
    assert server.ranges == ["bytes=1000-", None]
    assert dest.read_bytes() == DATA


def test_corrupted_file_rejected_by_checksum(server, tmp_path):
    server.corrupt = True
    dest = tmp_path / "strain.hdf5"
    with pytest.raises(DownloadError) as info:
        download(server.url(), dest, sha256=SHA, **FAST)
    msg = str(info.value)
    bad = hashlib.sha256(DATA[:100] + bytes([DATA[100] ^ 0xFF]) + DATA[101:]).hexdigest()
    assert server.url() in msg and SHA in msg and bad in msg
    assert isinstance(info.value, StageError)
    assert len(server.requests) == 1
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("code", [500, 503, 429])
def test_transient_errors_retried_then_succeed(server, tmp_path, sleeps, code):
    server.plan = [code, code]
    dest = tmp_path / "strain.hdf5"
    download(server.url(), dest, sha256=SHA, **FAST)
    assert len(server.requests) == 3
    assert sleeps == [0.01, 0.02]
    assert dest.read_bytes() == DATA


def test_persistent_server_error_gives_up(server, tmp_path, sleeps, caplog):
    server.status = 500
    dest = tmp_path / "strain.hdf5"
    with caplog.at_level("WARNING", logger="gwlora.download"), pytest.raises(DownloadError) as info:
        download(server.url(), dest, sha256=SHA, **{**FAST, "retries": 3})
    msg = str(info.value)
    assert server.url() in msg and "4 attempts" in msg and "HTTP 500" in msg
    assert len(server.requests) == 4
    assert sleeps == [0.01, 0.02, 0.04]
    assert caplog.text.count("failed") == 4
    assert leftovers(tmp_path) == []


def test_exhausted_truncations_keep_part_for_next_run(server, tmp_path, sleeps):
    server.plan = [("cut", 100_000)] * 2
    dest = tmp_path / "strain.hdf5"
    with pytest.raises(DownloadError, match="2 attempts.*ended early"):
        download(server.url(), dest, sha256=SHA, **{**FAST, "retries": 1})
    assert leftovers(tmp_path) == ["strain.hdf5.part"]
    assert not dest.exists()
    download(server.url(), dest, sha256=SHA, **FAST)  # the next run resumes
    assert server.ranges[-1] == "bytes=200000-"
    assert dest.read_bytes() == DATA


def run_in_threads(*calls, timeout: float = 20.0) -> list:
    """Run each call in its own thread, one after another once the server saw the previous one's request."""
    results: list = [None] * len(calls)

    def runner(i, call):
        try:
            results[i] = call()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            results[i] = exc

    threads = []
    for i, (call, started) in enumerate(calls):
        threads.append(threading.Thread(target=runner, args=(i, call), daemon=True))
        threads[-1].start()
        until = time.monotonic() + 5
        while not started() and time.monotonic() < until:
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a download did not finish"
    return results


def test_concurrent_downloads_of_one_file_wait_for_each_other(server, tmp_path, caplog):
    server.pace = (1 << 18, 0.05)  # about 0.6 s for the whole file
    dest = tmp_path / "strain.hdf5"
    fetch = lambda: download(server.url(), dest, sha256=SHA, **FAST)  # noqa: E731
    with caplog.at_level("INFO", logger="gwlora.download"):
        # the second starts while the first is writing its .part
        results = run_in_threads(
            (fetch, lambda: len(server.requests) == 1 and dest.with_name("strain.hdf5.part").exists()),
            (fetch, lambda: True),
        )
    assert results == [dest, dest]
    assert dest.read_bytes() == DATA
    assert len(server.requests) == 1  # the second found the file the first verified
    assert "another download of" in caplog.text
    assert leftovers(tmp_path) == ["strain.hdf5"]  # no .part, no .lock


def test_lock_file_left_by_a_killed_download_is_taken_over(server, tmp_path):
    dest = tmp_path / "strain.hdf5"
    dest.with_name("strain.hdf5.lock").write_text("")  # its process died: nobody holds the lock
    download(server.url(), dest, sha256=SHA, **FAST)
    assert dest.read_bytes() == DATA
    assert leftovers(tmp_path) == ["strain.hdf5"]


def test_trickling_server_is_stopped_by_the_deadline_and_the_part_resumed(server, tmp_path, sleeps):
    server.pace = (2000, 0.01)  # 200 kB/s: the whole file would take 15 s, every read returns at once
    dest = tmp_path / "strain.hdf5"
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(server.url(), dest, sha256=SHA, **{**FAST, "deadline": 1.0})
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert server.url() in message and "deadline of 1 s" in message and "strain.hdf5.part" in message, message
    assert 0.9 < elapsed < 3, f"took {elapsed:.1f} s"
    assert leftovers(tmp_path) == ["strain.hdf5.part"]
    kept = (tmp_path / "strain.hdf5.part").stat().st_size
    assert 0 < kept < SIZE
    assert len(server.requests) == 1 and sleeps == []

    server.pace = None
    download(server.url(), dest, sha256=SHA, **FAST)  # the next run resumes
    assert server.ranges[-1] == f"bytes={kept}-"
    assert dest.read_bytes() == DATA
    assert leftovers(tmp_path) == ["strain.hdf5"]


def test_stalled_read_does_not_outlive_the_deadline(server, tmp_path, sleeps):
    server.plan = [("stall", CUT)]
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"deadline of 0\.5 s") as info:
        download(server.url(), tmp_path / "strain.hdf5", sha256=SHA, **{**FAST, "timeout": 5.0, "deadline": 0.5})
    assert time.monotonic() - started < 2  # the 5 s read timeout was cut to the time left
    assert server.url() in str(info.value)
    assert leftovers(tmp_path) == ["strain.hdf5.part"]


def test_waiting_for_another_download_counts_against_the_deadline(server, tmp_path):
    import fcntl

    dest = tmp_path / "strain.hdf5"
    with open(tmp_path / "strain.hdf5.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another download holds the file
        started = time.monotonic()
        with pytest.raises(DownloadError, match=r"another download of .*strain\.hdf5.*deadline of 0\.3 s"):
            download(server.url(), dest, sha256=SHA, **{**FAST, "deadline": 0.3})
        assert time.monotonic() - started < 2
    assert server.requests == []


def test_bad_deadline(tmp_path):
    with pytest.raises(DownloadError, match="deadline must be > 0"):
        download("http://127.0.0.1:9/x", tmp_path / "x", deadline=0)


def test_404_fails_at_once(server, tmp_path, sleeps):
    server.status = 404
    with pytest.raises(DownloadError) as info:
        download(server.url(), tmp_path / "strain.hdf5", sha256=SHA, **FAST)
    assert "HTTP 404 Not Found" in str(info.value) and server.url() in str(info.value)
    assert len(server.requests) == 1 and sleeps == []
    assert leftovers(tmp_path) == []


def test_connection_refused_is_retried(tmp_path, sleeps, monkeypatch):
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x"
    with pytest.raises(DownloadError, match="3 attempts") as info:
        download(url, tmp_path / "x", **{**FAST, "retries": 2})
    assert url in str(info.value)
    assert sleeps == [0.01, 0.02]


def test_existing_dest_with_matching_checksum_is_kept(server, tmp_path):
    dest = tmp_path / "strain.hdf5"
    dest.write_bytes(DATA)
    assert download(server.url(), dest, sha256=SHA, **FAST) == dest
    assert server.requests == []


def test_existing_dest_with_wrong_checksum_is_fetched_again(server, tmp_path, caplog):
    dest = tmp_path / "strain.hdf5"
    dest.write_bytes(b"not the file")
    with caplog.at_level("WARNING", logger="gwlora.download"):
        download(server.url(), dest, sha256=SHA, **FAST)
    assert len(server.requests) == 1
    assert dest.read_bytes() == DATA
    assert "checksum mismatch" in caplog.text


def test_existing_dest_without_checksum_uses_validator(server, tmp_path):
    dest = tmp_path / "strain.hdf5"
    dest.write_bytes(b"old")
    download(server.url(), dest, **FAST)  # no checksum, no validator: kept as is
    assert server.requests == [] and dest.read_bytes() == b"old"

    def validate(path: Path) -> None:
        if path.stat().st_size != SIZE:
            raise ValueError("wrong size")

    download(server.url(), dest, validate=validate, **FAST)
    assert len(server.requests) == 1 and dest.read_bytes() == DATA


def test_validator_rejects_file(server, tmp_path):
    dest = tmp_path / "strain.hdf5"
    seen = []

    def validate(path: Path) -> None:
        seen.append((path.name, path.stat().st_size))
        raise ValueError("not an HDF5 file: bad signature")

    with pytest.raises(DownloadError) as info:
        download(server.url(), dest, sha256=SHA, validate=validate, **FAST)
    assert "not an HDF5 file: bad signature" in str(info.value) and server.url() in str(info.value)
    assert seen == [("strain.hdf5.part", SIZE)]
    assert leftovers(tmp_path) == []


def test_validator_accepts_file(server, tmp_path):
    seen = []
    download(server.url(), tmp_path / "strain.hdf5", validate=lambda p: seen.append(p.read_bytes() == DATA), **FAST)
    assert seen == [True]


def test_bad_arguments(tmp_path):
    with pytest.raises(DownloadError, match="scheme"):
        download("ftp://example.invalid/x", tmp_path / "x")
    with pytest.raises(DownloadError, match="64 hexadecimal"):
        download("http://127.0.0.1:9/x", tmp_path / "x", sha256="abc")


# --- manifest -------------------------------------------------------------------


def test_manifest_round_trip_and_verify(tmp_path):
    cache = tmp_path / "cache"
    (cache / "sub").mkdir(parents=True)
    (cache / "a.hdf5").write_bytes(b"alpha")
    (cache / "sub" / "b.hdf5").write_bytes(b"bravo")
    entries = {
        "sub/b.hdf5": manifest_entry(cache / "sub" / "b.hdf5", "http://x/b"),
        "a.hdf5": manifest_entry(cache / "a.hdf5", "http://x/a"),
    }
    assert entries["a.hdf5"] == {"url": "http://x/a", "sha256": hashlib.sha256(b"alpha").hexdigest(), "size": 5}
    path = tmp_path / "manifest.json"
    assert read_manifest(path) == {}
    write_manifest(path, entries)
    text = path.read_text()
    assert text.index('"a.hdf5"') < text.index('"sub/b.hdf5"')  # sorted
    assert read_manifest(path) == entries
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    verify_manifest(cache, read_manifest(path))

    (cache / "a.hdf5").write_bytes(b"alphA")  # same size, other content
    (cache / "sub" / "b.hdf5").unlink()
    with pytest.raises(DownloadError) as info:
        verify_manifest(cache, entries)
    msg = str(info.value)
    assert "a.hdf5" in msg and "sha256" in msg
    assert "b.hdf5" in msg and "missing" in msg

    (cache / "a.hdf5").write_bytes(b"alpha!")
    with pytest.raises(DownloadError, match=r"a\.hdf5: size 6"):
        verify_manifest(cache, {"a.hdf5": entries["a.hdf5"]})


def test_read_manifest_rejects_garbage(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("[1, 2]")
    with pytest.raises(DownloadError, match="manifest.json"):
        read_manifest(path)
    path.write_text("{not json")
    with pytest.raises(DownloadError, match="manifest.json"):
        read_manifest(path)


# --- archives -------------------------------------------------------------------

FILES = {"audio/a.wav": b"RIFF-a", "audio/deep/b.wav": b"RIFF-b", "README": b"read me"}


def make_tar(path: Path, extra: list[tarfile.TarInfo] = (), mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:  # bad members come last: nothing may be written before they are seen
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def make_zip(path: Path, extra: list[str] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in FILES.items():
            zf.writestr(name, data)
        for name in extra:
            zf.writestr(zipfile.ZipInfo(name), b"evil")
    return path


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


def assert_extracted(target: Path) -> None:
    got = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert got == FILES


@pytest.mark.parametrize(
    "suffix,mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar", "w"), (".tar.bz2", "w:bz2"), (".tar.xz", "w:xz")]
)
def test_extract_tar(tmp_path, suffix, mode):
    archive = make_tar(tmp_path / f"audio{suffix}", mode=mode)
    target = tmp_path / "out" / "audio"
    assert extract_archive(archive, target) == target
    assert_extracted(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["audio"]  # no temp dir left


def test_extract_zip_replaces_existing_target(tmp_path):
    archive = make_zip(tmp_path / "audio.zip")
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    extract_archive(archive, target)
    assert_extracted(target)


@pytest.mark.parametrize(
    "member,why",
    [
        (tar_member("../evil"), "'..'"),
        (tar_member("audio/../../evil"), "'..'"),
        (tar_member("/tmp/evil-abs"), "absolute"),
        (tar_member("audio/link", tarfile.SYMTYPE, "/etc/passwd"), "symlink"),
        (tar_member("audio/hard", tarfile.LNKTYPE, "README"), "hard link"),
        (tar_member("audio/dev", tarfile.CHRTYPE), "device"),
        (tar_member("audio/fifo", tarfile.FIFOTYPE), "FIFO"),
    ],
    ids=lambda v: v.name if isinstance(v, tarfile.TarInfo) else None,
)
def test_extract_tar_refuses_bad_member(tmp_path, member, why):
    archive = make_tar(tmp_path / "bad.tar.gz", extra=[member])
    target = tmp_path / "out" / "audio"
    with pytest.raises(DownloadError) as info:
        extract_archive(archive, target)
    msg = str(info.value)
    assert str(archive) in msg and repr(member.name) in msg and why in msg
    assert not target.exists() and not target.parent.exists()
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil-abs").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil-abs.txt", "a/../../evil.txt"])
def test_extract_zip_refuses_bad_member(tmp_path, name):
    archive = make_zip(tmp_path / "bad.zip", extra=[name])
    assert name in zipfile.ZipFile(archive).namelist()
    target = tmp_path / "out"
    with pytest.raises(DownloadError) as info:
        extract_archive(archive, target)
    assert str(archive) in str(info.value) and repr(name) in str(info.value)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]


def test_extract_zip_refuses_symlink(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("audio/link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DownloadError, match="symlink"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extract_unknown_or_broken_archive(tmp_path):
    odd = tmp_path / "data.rar"
    odd.write_bytes(b"Rar!")
    with pytest.raises(DownloadError, match=r"data\.rar.*unknown archive type"):
        extract_archive(odd, tmp_path / "out")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DownloadError, match=r"broken\.tar\.gz"):
        extract_archive(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- archives cut short --------------------------------------------------------

CLIPS = {f"clips/{'yes' if i % 2 else 'no'}/{i:02d}.wav": random.Random(i).randbytes(3000) for i in range(26)}


def clips_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in CLIPS.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def two_member_tgz() -> tuple[bytes, int]:
    """The clips as a gzip tarball in two gzip members (as pigz or bgzip write them); the first ends after 18 clips."""
    tar = clips_tar()
    split = tarfile.open(fileobj=io.BytesIO(tar)).getmembers()[18].offset
    first = gzip.compress(tar[:split], mtime=0)
    return first + gzip.compress(tar[split:], mtime=0), len(first)


def cut_archives() -> dict[str, tuple[str, bytes]]:
    """Archives cut where tarfile alone would not notice: (suffix, bytes)."""
    tgz, first = two_member_tgz()
    tar = clips_tar()
    one_member = gzip.compress(tar, mtime=0)
    return {
        "tgz-between-gzip-members": (".tar.gz", tgz[:first]),  # a whole gzip stream of the first 18 clips
        "tar-after-a-member": (".tar", tar[: tarfile.open(fileobj=io.BytesIO(tar)).getmembers()[18].offset]),
        "tgz-without-its-crc": (".tar.gz", one_member[:-8]),
    }


@pytest.mark.parametrize("case", sorted(cut_archives()))
def test_extract_refuses_an_archive_cut_short(tmp_path, case):
    suffix, data = cut_archives()[case]
    archive = tmp_path / f"clips{suffix}"
    archive.write_bytes(data)
    target = tmp_path / "out"
    with pytest.raises(DownloadError) as info:
        extract_archive(archive, target)
    assert str(archive) in str(info.value)
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == [archive.name]
    with pytest.raises(DownloadError, match="does not read to its end"):
        dl.verify_archive(archive)


def test_whole_two_member_tarball_is_accepted(tmp_path):
    archive = tmp_path / "clips.tar.gz"
    archive.write_bytes(two_member_tgz()[0])
    dl.verify_archive(archive)
    target = extract_archive(archive, tmp_path / "out")
    assert {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()} == CLIPS


def test_zip_without_its_central_directory_is_refused(tmp_path):
    archive = make_zip(tmp_path / "audio.zip")
    archive.write_bytes(archive.read_bytes()[:-30])
    with pytest.raises(DownloadError, match=r"audio\.zip.*does not read to its end"):
        dl.verify_archive(archive)


def test_truncated_close_delimited_tarball_is_not_taken_for_complete(server, tmp_path, sleeps, caplog):
    """The server sends no Content-Length and closes early: every attempt ends cut short, nothing is kept."""
    server.data, first = two_member_tgz()
    server.close_delimited = True
    server.plan = [("cut", first)] * 3
    dest = tmp_path / "clips.tar.gz"
    with caplog.at_level("WARNING", logger="gwlora.download"), pytest.raises(DownloadError) as info:
        download(server.url("/clips.tar.gz"), dest, **{**FAST, "retries": 2})
    message = str(info.value)
    assert server.url("/clips.tar.gz") in message and "3 attempts" in message, message
    assert "does not read to its end" in message and "no end-of-archive block after its 18 member(s)" in message
    assert "cannot be verified by checksum" in caplog.text
    assert leftovers(tmp_path) == []
    assert server.ranges == [None] * 3  # each attempt started afresh


def test_truncated_close_delimited_tarball_is_downloaded_again(server, tmp_path, sleeps):
    server.data, first = two_member_tgz()
    server.close_delimited = True
    server.plan = [("cut", first // 2)]  # cut inside the gzip stream this time
    dest = tmp_path / "clips.tar.gz"
    download(server.url("/clips.tar.gz"), dest, **FAST)
    assert dest.read_bytes() == server.data and len(server.requests) == 2 and sleeps == [0.01]
    assert leftovers(tmp_path) == ["clips.tar.gz"]


def test_cached_archive_cut_short_is_fetched_again(server, tmp_path, caplog):
    """An archive an earlier run cached although it was cut short is not trusted (no checksum to vouch for it)."""
    server.data, first = two_member_tgz()
    dest = tmp_path / "clips.tar.gz"
    dest.write_bytes(server.data[:first])
    with caplog.at_level("WARNING", logger="gwlora.download"):
        download(server.url("/clips.tar.gz"), dest, **FAST)
    assert dest.read_bytes() == server.data and len(server.requests) == 1
    assert "does not read to its end" in caplog.text


def test_archive_with_checksum_is_checked_by_it(server, tmp_path, caplog):
    server.data, _ = two_member_tgz()
    with caplog.at_level("WARNING", logger="gwlora.download"):
        download(server.url("/clips.tar.gz"), tmp_path / "clips.tar.gz", sha256=hashlib.sha256(server.data).hexdigest(), **FAST)
    assert "cannot be verified by checksum" not in caplog.text


def test_fetch_archive_does_not_cache_a_tarball_cut_short(server, tmp_path, sleeps):
    """fetch_archive (the audiofolder source) through this downloader: 18 of 26 clips are never kept as the data."""
    try:
        from gwlora.audiofolder_source import fetch_archive
    except ImportError:  # where it lived before the audio sources were split
        from gwlora.audio_sources import fetch_archive

    server.data, first = two_member_tgz()
    server.close_delimited = True
    server.plan = [("cut", first)] * 5  # every attempt of download()'s default 4 retries
    url = server.url("/clips.tar.gz")
    cache = tmp_path / "audio"
    with pytest.raises(DownloadError, match="does not read to its end"):
        fetch_archive(url, None, cache)
    assert [p for p in cache.iterdir() if not p.name.endswith(".lock")] == []
    target = fetch_archive(url, None, cache)  # the server sends it whole now
    assert {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()} == CLIPS


@pytest.mark.parametrize("url", ["https://h/..", "https://h/.", "https://h/", "https://h/a/.hidden.hdf5", "https://h/a%2F..%2Fb"])
def test_url_file_name_refuses_names_that_are_not_plain(url):
    with pytest.raises(DownloadError, match="cannot name a cached file"):
        url_file_name(url)


def test_url_file_name_and_cache_name():
    assert url_file_name("https://gwosc.org/a/H-H1_GWOSC_4KHZ_R1-1-4096.hdf5?x=1") == "H-H1_GWOSC_4KHZ_R1-1-4096.hdf5"
    names = {cache_name(u, stem) for u, stem in [("https://h/...tar.gz", ".."), ("https://h/..tar.gz", "."), ("https://k/..tar.gz", ".")]}
    assert len(names) == 3
    for name in names:
        assert name.startswith("download-") and "/" not in name
    assert cache_name("https://h/my clips!.zip", "my clips!").startswith("my_clips-")
