"""Headless Chromium for the deck: print it to PDF, and walk its slides as a reader would.

A small client of the Chrome DevTools Protocol over ``--remote-debugging-pipe``
(standard library only: no browser driver to install). Used by the deck stage
for ``slides.pdf`` when a Chromium is on PATH, and by the tests (and by users:
``python -m gwlora.browser check results/demo/slides/index.html``) to open the
deck, press the arrow key through every slide, screenshot each one and report
console errors, broken images, blank or overflowing slides, and code or text
clipped at a box's or the slide's edge.

Both deck formats are driven through their own JavaScript API: the fallback
template's ``window.gwloraDeck`` and Quarto's ``Reveal``.

Every wait has a deadline (``poll`` on the pipe with the time left, never a
bare blocking read): when one passes, the browser's whole process group is
killed and :class:`~gwlora.cli.StageError` names the page and the step. A
JavaScript dialog (``alert``, ``confirm``, ``prompt``) would stop the page
until someone answers it: it is dismissed at once, logged, and reported among
the page's :meth:`Browser.errors`.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

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


def live_group_members(pgid: int) -> list[int]:
    """Processes of process group `pgid` that are still running (zombies excluded).

    Read from ``/proc`` where there is one; elsewhere ``killpg(pgid, 0)`` says
    whether any member (zombies included) is left.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


class Browser:
    """One headless Chromium, driven over the DevTools pipe (fd 3 in, fd 4 out).

    `timeout` bounds every step (a command and its reply, or a wait for an
    event); the browser runs in its own session so that a step that overruns
    kills it and every process it started.
    """

    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        executable = executable or find_chromium()
        if not executable:
            raise StageError(f"no Chromium found on PATH (looked for {', '.join(CHROMIUM_NAMES)}; or set GWLORA_CHROMIUM)")
        self.executable = executable
        self.timeout = timeout
        self.url = "about:blank"  # the page being driven, for the error messages
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
        try:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=wire_pipes, close_fds=False,  # the parent's other fds are close-on-exec (PEP 446)
                start_new_session=True,  # its own process group, killed whole on a timeout
            )
        except OSError as exc:
            for fd in (to_child, from_child, self._read, self._write):
                os.close(fd)
            shutil.rmtree(self._profile, ignore_errors=True)
            raise StageError(f"cannot start Chromium {executable}: {exc}") from exc
        os.close(to_child)
        os.close(from_child)
        os.set_blocking(self._write, False)  # a browser that stops reading cannot block a write past the deadline
        self._buffer = b""
        self._next_id = 0
        self._killed = False
        self.events: list[dict] = []
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        except BaseException:
            self.close()
            raise

    # --- the pipe, every wait bounded by a deadline

    def _timed_out(self, step: str, limit: float) -> NoReturn:
        pid = self._proc.pid
        self.kill()
        raise StageError(
            f"Chromium ({self.executable}): {step} on {self.url} did not finish within {limit:g} s; "
            f"killed the browser (pid {pid}) and its process group"
        )

    def _exited(self, step: str) -> StageError:
        try:
            code = self._proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            code = None
        return StageError(f"Chromium ({self.executable}) exited (code {code}) during {step} on {self.url}")

    def _ready(self, fd: int, event: int, deadline: float, step: str, limit: float) -> None:
        """Wait until `fd` is ready for `event` (or hung up), or time out at `deadline`."""
        poller = select.poll()
        poller.register(fd, event)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._timed_out(step, limit)
            if poller.poll(max(1, int(remaining * 1000 + 1))):
                return

    def _send(self, message: dict, deadline: float, step: str, limit: float) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            self._ready(self._write, select.POLLOUT, deadline, step, limit)
            try:
                data = data[os.write(self._write, data) :]
            except BlockingIOError:
                continue
            except OSError as exc:  # EPIPE: the browser is gone
                raise self._exited(step) from exc

    def _command(self, method: str, session: str | None, params: dict, deadline: float, step: str, limit: float) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._send(message, deadline, step, limit)
        return message["id"]

    def _receive(self, deadline: float, step: str, limit: float) -> dict:
        while (end := self._buffer.find(b"\0")) < 0:
            self._ready(self._read, select.POLLIN, deadline, step, limit)
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise self._exited(step)
            self._buffer += chunk
        message, self._buffer = json.loads(self._buffer[:end]), self._buffer[end + 1 :]
        if message.get("method") == "Page.javascriptDialogOpening":
            self._dismiss(message, deadline, step, limit)
        return message

    def _dismiss(self, event: dict, deadline: float, step: str, limit: float) -> None:
        """Answer a JavaScript dialog at once (it would stop the page); the event stays in `events` as a problem."""
        params = event.get("params", {})
        kind = params.get("type", "dialog")
        log.warning("%s: the page opened a JavaScript %s dialog %r; dismissed it", self.url, kind, params.get("message", ""))
        # Leaving the page is the only answer to `beforeunload` that lets a navigation go on.
        accept = kind == "beforeunload"
        self._command("Page.handleJavaScriptDialog", event.get("sessionId"), {"accept": accept}, deadline, step, limit)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and wait for its reply; events that arrive meanwhile are kept in `events`."""
        limit = self.timeout
        deadline = time.monotonic() + limit
        command = self._command(method, session, params, deadline, method, limit)
        while True:
            reply = self._receive(deadline, method, limit)
            if reply.get("id") == command:
                if "error" in reply:
                    raise StageError(f"Chromium: {method} failed on {self.url}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:  # an event; replies to our dialog answers are dropped
                self.events.append(reply)

    def page(self, method: str, **params) -> dict:
        return self.call(method, session=self.session, **params)

    def wait_for(self, event: str, timeout: float | None = None) -> dict:
        limit = timeout or self.timeout
        deadline = time.monotonic() + limit
        for i, message in enumerate(self.events):
            if message.get("method") == event:
                return self.events.pop(i)
        while True:
            message = self._receive(deadline, f"waiting for {event}", limit)
            if message.get("method") == event:
                return message
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise StageError(f"Chromium: {expression!r} threw {result['exceptionDetails'].get('text')} on {self.url}")
        return result["result"].get("value")

    def open(self, path: str | Path, query: str = "") -> None:
        """Load a local file at the slide size and wait until it and its fonts are ready."""
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.page(domain)
        self.page("Emulation.setDeviceMetricsOverride", width=SLIDE_WIDTH, height=SLIDE_HEIGHT, deviceScaleFactor=1, mobile=False)
        self.url = Path(path).resolve().as_uri() + query
        self.page("Page.navigate", url=self.url)
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
        """Console errors, uncaught exceptions, failed loads and JavaScript dialogs the page produced so far."""
        found = []
        for message in self.events:
            method, params = message.get("method"), message.get("params", {})
            if method == "Page.javascriptDialogOpening":
                found.append(f"JavaScript {params.get('type', 'dialog')} dialog {params.get('message', '')!r} (dismissed)")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                found.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        return found

    def kill(self) -> None:
        """Kill the browser and every process of its group at once (no goodbye over the pipe).

        SIGKILL is delivered asynchronously: a helper busy in the kernel can outlive
        the call by a moment, so this returns once the group has no live member
        (or after 5 s, with a warning naming the survivors).
        """
        self._killed = True
        deadline = time.monotonic() + 5.0
        while True:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if self._proc.poll() is None:
                self._proc.wait()
            survivors = live_group_members(self._proc.pid)
            if not survivors:
                return
            if time.monotonic() > deadline:
                log.warning("Chromium helpers %s outlived SIGKILL for 5 s", survivors)
                return
            time.sleep(0.02)

    def close(self) -> None:
        if not self._killed and self._proc.poll() is None:
            self.timeout = min(self.timeout, 5.0)
            try:
                self.call("Browser.close")
            except (StageError, OSError):
                pass
        try:
            self._proc.wait(timeout=0 if self._killed else 10)
        except subprocess.TimeoutExpired:
            pass
        self.kill()  # and any helper process still left in its group
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

# What a reader cannot see on a slide although it is there: a code block whose lines run past its right edge or whose
# last lines are cut off (a <pre> scrolls or hides what does not fit), any box that hides overflowing content, and text
# past the slide's own edges. Each as "what: its first words".
CLIPPED = """(slide) => {
  const edge = slide.getBoundingClientRect(), found = [], past = {right: [], bottom: []};
  const words = e => (e.innerText || '').trim().replace(/\\s+/g, ' ').slice(0, 50);
  for (const e of slide.querySelectorAll('*')) {
    const style = getComputedStyle(e);
    if (style.display === 'none' || style.visibility === 'hidden') continue;
    const hides = e.tagName === 'PRE' || style.overflowX !== 'visible' || style.overflowY !== 'visible';
    if (hides && e.scrollWidth > e.clientWidth + 2) found.push(`${e.tagName.toLowerCase()} clipped at its right edge (${e.scrollWidth} px wide in ${e.clientWidth} px): ${words(e)}`);
    else if (hides && e.scrollHeight > e.clientHeight + 2) found.push(`${e.tagName.toLowerCase()} cut off at its bottom (${e.scrollHeight} px tall in ${e.clientHeight} px): ${words(e)}`);
    if (e.children.length === 0 && words(e)) {
      const r = e.getBoundingClientRect();
      if (r.width > 0 && r.right > edge.right + 1) past.right.push(words(e));
      else if (r.width > 0 && r.bottom > edge.bottom + 1) past.bottom.push(words(e));
    }
  }
  for (const side of ['right', 'bottom'])
    if (past[side].length) found.push(`${past[side].length} text box(es) past the slide's ${side} edge, the first: ${past[side][0]}`);
  return found;
}"""

SLIDE_STATE = (
    "(() => { const d = " + DECK_API + "; if (!d) return null; const el = d.el;"
    " const imgs = [...el.querySelectorAll('img')];"
    " const title = el.querySelector('h1, h2'); const text = el.innerText.trim();"
    " return {kind: d.kind, count: d.count, index: d.index,"
    " title: title ? title.innerText.trim() : text.split('\\n')[0],"
    " text_chars: text.length, images: imgs.length,"
    " broken_images: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.getAttribute('src') || '').slice(0, 60)),"
    " overflow: el.scrollHeight > el.clientHeight + 4 || el.scrollWidth > el.clientWidth + 4,"
    " clipped: (" + CLIPPED + ")(el)}; })()"
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
    clipped: list[str] = field(default_factory=list)
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
            out += [f"{where}: {what}" for what in s.clipped]
        return out


def distinct_colours(png: bytes) -> int:
    """How many colours a screenshot holds (1 means an empty, uniform slide); capped for speed."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").reduce(4)
    return len(image.getcolors(maxcolors=4096) or range(4097))


def walk_deck(
    html: str | Path, screenshots: str | Path | None = None, executable: str | None = None, timeout: float = 60.0
) -> Walk:
    """Open a rendered deck, go through every slide with the arrow key, and report what a reader would see.

    `timeout` bounds each step in the browser (see :class:`Browser`).
    """
    shots = Path(screenshots) if screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    with Browser(executable, timeout) as browser:
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
            fields = {k: state[k] for k in ("title", "text_chars", "images", "broken_images", "overflow", "clipped")}
            walk.slides.append(Slide(number=number, distinct_colours=distinct_colours(png), screenshot=path, **fields))
        walk.errors += browser.errors()
    return walk


def print_pdf(html: str | Path, pdf: str | Path, executable: str | None = None, timeout: float = 60.0) -> Path:
    """The deck as a PDF, one slide per page (reveal.js decks through their ``?print-pdf`` view).

    `timeout` bounds each step in the browser (see :class:`Browser`).
    """
    html = Path(html)
    with Browser(executable, timeout) as browser:
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
    check = sub.add_parser("check", help="walk every slide; exit 1 on console errors, blank, broken or overflowing slides, clipped code or text")
    check.add_argument("deck", help="the rendered deck (slides/index.html)")
    check.add_argument("--screenshots", help="directory for one PNG per slide")
    pdf = sub.add_parser("pdf", help="print the deck to PDF")
    pdf.add_argument("deck", help="the rendered deck (slides/index.html)")
    pdf.add_argument("--out", required=True, help="the PDF to write (one slide per page)")


def _run(args):
    """Check or print a rendered slide deck with headless Chromium."""
    if args.command == "pdf":
        log.info("wrote %s", print_pdf(args.deck, args.out))
        return
    walk = walk_deck(args.deck, args.screenshots)
    for slide in walk.slides:
        log.info("slide %3d  %-60s  %d images%s%s", slide.number, slide.title[:60], slide.images, "  OVERFLOW" if slide.overflow else "", "  CLIPPED" if slide.clipped else "")
    problems = walk.problems()
    if problems:
        raise StageError(f"{args.deck}: {len(problems)} problem(s): " + "; ".join(problems))
    log.info("%s: %d slides (%s deck), no problems", args.deck, len(walk.slides), walk.kind)


def main(argv=None) -> int:
    return run_stage("browser", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
