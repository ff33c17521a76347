"""Headless Chromium for the deck: print it to PDF, and walk its slides as a reader would.

A small client of the Chrome DevTools Protocol over ``--remote-debugging-pipe``
(standard library only: no browser driver to install). Used by the deck stage
for ``slides.pdf`` when a Chromium is on PATH, and by the tests (and by users:
``python -m gwlora.browser check results/demo/slides/index.html``) to open the
deck, press the arrow key through every slide, screenshot each one and report
console errors, broken images, blank or overflowing slides.

Both deck formats are driven through their own JavaScript API: the fallback
template's ``window.gwloraDeck`` and Quarto's ``Reveal``.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cli import StageError, atomic_file, run_stage

log = logging.getLogger("gwlora.browser")

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
SLIDE_WIDTH, SLIDE_HEIGHT = 1280, 720


def find_chromium() -> str | None:
    """The first Chromium-family browser on PATH (``GWLORA_CHROMIUM`` names one explicitly)."""
    explicit = os.environ.get("GWLORA_CHROMIUM")
    if explicit:
        return shutil.which(explicit) or explicit
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def _high_fd(fd: int) -> int:
    """`fd` moved above 9 (close-on-exec), so wiring the child's fds 3 and 4 cannot clobber it."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """One headless Chromium, driven over the DevTools pipe (fd 3 in, fd 4 out)."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        executable = executable or find_chromium()
        if not executable:
            raise StageError(f"no Chromium found on PATH (looked for {', '.join(CHROMIUM_NAMES)}; or set GWLORA_CHROMIUM)")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="gwlora-chromium-")
        to_child, self._write = map(_high_fd, os.pipe())
        self._read, from_child = map(_high_fd, os.pipe())

        def wire_pipes():  # in the child: the protocol's fds are 3 (commands) and 4 (replies), inheritable
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        args = [
            executable, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
            "--mute-audio", f"--user-data-dir={self._profile}", "about:blank",
        ]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes, close_fds=False,  # the parent's other fds are close-on-exec (PEP 446)
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def _send(self, message: dict) -> None:
        os.write(self._write, json.dumps(message).encode() + b"\0")

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise StageError("Chromium did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise StageError(f"Chromium exited (code {self._proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and wait for its reply; events that arrive meanwhile are kept in `events`."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise StageError(f"Chromium: {method} failed: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def page(self, method: str, **params) -> dict:
        return self.call(method, session=self.session, **params)

    def wait_for(self, event: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        for i, message in enumerate(self.events):
            if message.get("method") == event:
                return self.events.pop(i)
        while True:
            message = self._receive(deadline)
            if message.get("method") == event:
                return message
            self.events.append(message)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise StageError(f"Chromium: {expression!r} threw {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def open(self, path: str | Path, query: str = "") -> None:
        """Load a local file at the slide size and wait until it and its fonts are ready."""
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.page(domain)
        self.page("Emulation.setDeviceMetricsOverride", width=SLIDE_WIDTH, height=SLIDE_HEIGHT, deviceScaleFactor=1, mobile=False)
        self.page("Page.navigate", url=Path(path).resolve().as_uri() + query)
        self.wait_for("Page.loadEventFired")
        self.evaluate("document.fonts.ready.then(() => true)")

    def key(self, key: str, code: int) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            self.page("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.page("Page.captureScreenshot", format="png")["data"])

    def pdf(self) -> bytes:
        data = self.page("Page.printToPDF", printBackground=True, preferCSSPageSize=True)["data"]
        return base64.b64decode(data)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads the page reported so far."""
        found = []
        for message in self.events:
            method, params = message.get("method"), message.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                found.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        return found

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (StageError, OSError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# The two deck formats, seen through their own APIs: slide count, current slide and its element.
DECK_API = """(() => {
  if (window.gwloraDeck) {
    const slides = [...document.querySelectorAll('#deck > section')];
    return {kind: 'fallback', count: window.gwloraDeck.count, index: window.gwloraDeck.current(),
            el: slides[window.gwloraDeck.current()]};
  }
  if (window.Reveal && Reveal.isReady && Reveal.isReady()) {
    const flat = Reveal.getSlides();
    return {kind: 'reveal', count: Reveal.getTotalSlides(), index: flat.indexOf(Reveal.getCurrentSlide()),
            el: Reveal.getCurrentSlide()};
  }
  return null;
})()"""

SLIDE_STATE = (
    "(() => { const d = " + DECK_API + "; if (!d) return null; const el = d.el;"
    " const imgs = [...el.querySelectorAll('img')];"
    " const title = el.querySelector('h1, h2'); const text = el.innerText.trim();"
    " return {kind: d.kind, count: d.count, index: d.index,"
    " title: title ? title.innerText.trim() : text.split('\\n')[0],"
    " text_chars: text.length, images: imgs.length,"
    " broken_images: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.getAttribute('src') || '').slice(0, 60)),"
    " overflow: el.scrollHeight > el.clientHeight + 4 || el.scrollWidth > el.clientWidth + 4}; })()"
)


@dataclass
class Slide:
    number: int
    title: str
    text_chars: int
    images: int
    broken_images: list[str]
    overflow: bool
    distinct_colours: int
    screenshot: Path | None = None

    @property
    def blank(self) -> bool:
        return self.distinct_colours <= 1 or (self.text_chars == 0 and self.images == 0)


@dataclass
class Walk:
    kind: str
    slides: list[Slide] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = list(self.errors)
        for s in self.slides:
            where = f"slide {s.number} ({s.title!r})"
            if s.blank:
                out.append(f"{where} is blank")
            if s.broken_images:
                out.append(f"{where} has broken images {s.broken_images}")
            if s.overflow:
                out.append(f"{where} overflows the slide")
        return out


def distinct_colours(png: bytes) -> int:
    """How many colours a screenshot holds (1 means an empty, uniform slide); capped for speed."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").reduce(4)
    return len(image.getcolors(maxcolors=4096) or range(4097))


def walk_deck(html: str | Path, screenshots: str | Path | None = None, executable: str | None = None) -> Walk:
    """Open a rendered deck, go through every slide with the arrow key, and report what a reader would see."""
    shots = Path(screenshots) if screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    with Browser(executable) as browser:
        browser.open(html)
        deadline = time.monotonic() + 10  # reveal.js readies itself after the load event
        while (state := browser.evaluate(SLIDE_STATE)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if state is None:
            raise StageError(f"{html}: not a slide deck this tool knows (neither the fallback deck nor reveal.js)")
        walk = Walk(kind=state["kind"])
        for number in range(1, state["count"] + 1):
            if number > 1:
                browser.key("ArrowRight", 39)
                state = browser.evaluate(SLIDE_STATE)
            if state["index"] != number - 1:
                walk.errors.append(f"the arrow key led to slide {state['index'] + 1}, expected {number}")
                break
            png = browser.screenshot()
            path = None
            if shots:
                path = shots / f"slide-{number:03d}.png"
                path.write_bytes(png)
            fields = {k: state[k] for k in ("title", "text_chars", "images", "broken_images", "overflow")}
            walk.slides.append(Slide(number=number, distinct_colours=distinct_colours(png), screenshot=path, **fields))
        walk.errors += browser.errors()
    return walk


def print_pdf(html: str | Path, pdf: str | Path, executable: str | None = None) -> Path:
    """The deck as a PDF, one slide per page (reveal.js decks through their ``?print-pdf`` view)."""
    html = Path(html)
    with Browser(executable) as browser:
        browser.open(html)
        kind = browser.evaluate("window.gwloraDeck ? 'fallback' : (window.Reveal ? 'reveal' : 'page')")
        if kind == "reveal":
            browser.open(html, "?print-pdf")
            browser.evaluate("new Promise(r => setTimeout(() => r(true), 500))")  # reveal lays out the print view
        data = browser.pdf()
    with atomic_file(Path(pdf)) as tmp:
        tmp.write_bytes(data)
    return Path(pdf)


def _parser(p):
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="walk every slide; exit 1 on console errors, blank, broken or overflowing slides")
    check.add_argument("deck", help="the rendered deck (slides/index.html)")
    check.add_argument("--screenshots", help="directory for one PNG per slide")
    pdf = sub.add_parser("pdf", help="print the deck to PDF")
    pdf.add_argument("deck")
    pdf.add_argument("--out", required=True)


def _run(args):
    """Check or print a rendered slide deck with headless Chromium."""
    if args.command == "pdf":
        log.info("wrote %s", print_pdf(args.deck, args.out))
        return
    walk = walk_deck(args.deck, args.screenshots)
    for slide in walk.slides:
        log.info("slide %3d  %-60s  %d images%s", slide.number, slide.title[:60], slide.images, "  OVERFLOW" if slide.overflow else "")
    problems = walk.problems()
    if problems:
        raise StageError(f"{args.deck}: {len(problems)} problem(s): " + "; ".join(problems))
    log.info("%s: %d slides (%s deck), no problems", args.deck, len(walk.slides), walk.kind)


def main(argv=None) -> int:
    return run_stage("browser", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
