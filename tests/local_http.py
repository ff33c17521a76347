"""A static HTTP server on 127.0.0.1 for the tests that download (no other address is ever used)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
from pathlib import Path


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] | None = None
    pause: float = 0.0  # seconds to wait after each 64 KiB piece of a body (a slow server)
    stop: threading.Event | None = None

    def log_message(self, *args) -> None:  # record requests instead of printing them
        if self.requests is not None:
            self.requests.append(self.path)

    def copyfile(self, source, outputfile) -> None:
        if not self.pause:
            shutil.copyfileobj(source, outputfile)
            return
        while (piece := source.read(1 << 16)) and not self.stop.is_set():
            outputfile.write(piece)
            outputfile.flush()
            self.stop.wait(self.pause)


@contextlib.contextmanager
def serve_directory(directory: Path, requests: list[str] | None = None, pause: float = 0.0):
    """Serve `directory` on a free port of 127.0.0.1; yields the base URL; appends each request path to `requests`.

    `pause` > 0 makes the server slow: it waits that long after each 64 KiB of a body.
    """
    handler = type("Handler", (_RecordingHandler,), {"requests": requests, "pause": pause, "stop": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        handler.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
