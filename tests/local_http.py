"""A static HTTP server on 127.0.0.1 for the tests that download (no other address is ever used)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from pathlib import Path


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] | None = None

    def log_message(self, *args) -> None:  # record requests instead of printing them
        if self.requests is not None:
            self.requests.append(self.path)


@contextlib.contextmanager
def serve_directory(directory: Path, requests: list[str] | None = None):
    """Serve `directory` on a free port of 127.0.0.1; yields the base URL; appends each request path to `requests`."""
    handler = type("Handler", (_RecordingHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
