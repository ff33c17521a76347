"""gwlora.browser: every wait has a deadline, a timeout kills the whole browser, JavaScript dialogs are dismissed.

The fake "browsers" are small shell scripts that never speak on the DevTools
pipe; the dialog tests need a real headless Chromium (skipped without one,
unless GWLORA_REQUIRE_CHROMIUM is set). A watchdog kills whatever a test
started after a few seconds, so that even a browser client without deadlines
fails these tests instead of hanging them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from gwlora.browser import Browser, find_chromium, live_group_members, print_pdf, walk_deck
from gwlora.cli import StageError

WATCHDOG_S = 8.0


@contextlib.contextmanager
def watchdog(pids):
    """After WATCHDOG_S seconds, SIGKILL every pid that `pids()` lists (so a blocking read sees EOF)."""

    def fire():
        for pid in pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    timer = threading.Timer(WATCHDOG_S, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting to be reaped does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def fake_browser(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-chromium"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def read_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().split()]
    except (OSError, ValueError):
        return []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_silent_browser_times_out_and_its_process_group_is_killed(tmp_path):
    pids = tmp_path / "pids"
    # The fake browser and a helper it starts both hold the pipe and say nothing on it.
    fake = fake_browser(tmp_path, f'echo $$ > "{pids}"\nsleep 30 &\necho $! >> "{pids}"\nwait\n')
    started = time.monotonic()
    with watchdog(lambda: read_pids(pids)), pytest.raises(StageError) as info:
        Browser(str(fake), timeout=1.0)
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert "Target.createTarget" in message and "about:blank" in message, message
    assert "within 1 s" in message and "killed the browser" in message and str(fake) in message, message
    assert elapsed < 5, f"took {elapsed:.1f} s"
    browser_pid, helper_pid = read_pids(pids)
    assert not alive(browser_pid) and not alive(helper_pid)
    assert live_group_members(browser_pid) == []
    assert not list(tmp_path.glob("gwlora-chromium-*"))


def test_browser_that_exits_at_once_is_named(tmp_path):
    fake = fake_browser(tmp_path, "exit 3\n")
    started = time.monotonic()
    with pytest.raises(StageError, match=r"exited \(code 3\) during Target\.createTarget on about:blank"):
        Browser(str(fake), timeout=2.0)
    assert time.monotonic() - started < 5


def test_missing_browser_executable_is_a_stage_error(tmp_path):
    with pytest.raises(StageError, match="cannot start Chromium"):
        Browser(str(tmp_path / "no-such-chromium"), timeout=1.0)


# --- with a real headless Chromium ----------------------------------------------

ALERT_PAGE = """<!doctype html><html><body>
<div id="deck"><section><h1>Only slide</h1><p>Some text on it.</p></section></div>
<script>
window.gwloraDeck = {count: 1, current: () => 0};
alert("hello from the page");
</script></body></html>
"""


@pytest.fixture
def chromium():
    found = find_chromium()
    if found is None:
        if os.environ.get("GWLORA_REQUIRE_CHROMIUM"):
            pytest.fail("GWLORA_REQUIRE_CHROMIUM is set but no Chromium is on PATH")
        pytest.skip("no headless Chromium on PATH")
    return found


@pytest.fixture
def alert_page(tmp_path):
    page = tmp_path / "alert.html"
    page.write_text(ALERT_PAGE)
    return page


def test_alert_is_dismissed_and_reported(chromium, alert_page, caplog):
    started = time.monotonic()
    with Browser(chromium, timeout=10.0) as browser:
        with watchdog(lambda: [browser._proc.pid]), caplog.at_level("WARNING", logger="gwlora.browser"):
            browser.open(alert_page)  # the alert() during loading would hold back the load event
            assert browser.evaluate("confirm('sure?')") is False  # dismissed: cancel
            assert browser.evaluate("1 + 1") == 2
        errors = browser.errors()
    assert browser._proc.poll() is not None and live_group_members(browser._proc.pid) == []  # closed, no helper left
    assert "JavaScript alert dialog 'hello from the page' (dismissed)" in errors
    assert "JavaScript confirm dialog 'sure?' (dismissed)" in errors
    assert "alert dialog 'hello from the page'" in caplog.text and alert_page.name in caplog.text
    assert time.monotonic() - started < WATCHDOG_S


def test_walk_and_pdf_of_a_page_with_an_alert(chromium, alert_page, tmp_path, monkeypatch):
    browsers = []
    monkeypatch.setattr(Browser, "open", _recording_open(browsers))
    started = time.monotonic()
    with watchdog(lambda: [b._proc.pid for b in browsers]):
        walk = walk_deck(alert_page, executable=chromium, timeout=10.0)
        pdf = print_pdf(alert_page, tmp_path / "out.pdf", executable=chromium, timeout=10.0)
    assert [s.title for s in walk.slides] == ["Only slide"]
    assert "JavaScript alert dialog 'hello from the page' (dismissed)" in walk.problems()
    assert pdf.read_bytes().startswith(b"%PDF")
    assert time.monotonic() - started < 2 * WATCHDOG_S


def _recording_open(browsers):
    original = Browser.open

    def open_(self, *args, **kwargs):
        browsers.append(self)  # for the watchdog
        return original(self, *args, **kwargs)

    return open_


def test_a_step_that_never_ends_kills_chromium(chromium, alert_page):
    started = time.monotonic()
    browser = Browser(chromium, timeout=10.0)
    with watchdog(lambda: [browser._proc.pid]):
        try:
            browser.open(alert_page)
            browser.timeout = 1.0
            with pytest.raises(StageError) as info:
                browser.evaluate("new Promise(() => {})")  # never settles
        finally:
            browser.close()
    message = str(info.value)
    assert "Runtime.evaluate" in message and alert_page.resolve().as_uri() in message and "within 1 s" in message
    assert browser._proc.poll() is not None
    assert live_group_members(browser._proc.pid) == []
    assert time.monotonic() - started < WATCHDOG_S


CLIPPED_PAGE = """<!doctype html><html><body style="margin:0">
<div id="deck" style="width:1280px;height:720px;position:relative">
<section style="position:absolute;inset:0;padding:36px 64px;overflow:hidden;box-sizing:border-box">
<h2>Implementation</h2>
<pre style="overflow:auto;font-size:16px">short line
a line of code far too long for its box: """ + "x" * 200 + """</pre>
<div style="position:absolute;left:1200px;top:300px;white-space:nowrap">text past the right edge</div>
</section></div>
<script>window.gwloraDeck = {count: 1, current: () => 0};</script></body></html>
"""


def test_walk_flags_code_clipped_in_its_box_and_text_past_the_slide(chromium, tmp_path):
    """What a reader cannot see although it is on the slide: a code line cut at its box's right edge, text beyond the
    slide's right edge (the slide itself hides it, so its own size says nothing)."""
    page = tmp_path / "clipped.html"
    page.write_text(CLIPPED_PAGE)
    problems = walk_deck(page, executable=chromium, timeout=10.0).problems()
    assert any("pre clipped at its right edge" in p and "a line of code far too long" in p for p in problems), problems
    assert any("text box(es) past the slide's right edge, the first: text past the right edge" in p for p in problems), problems
