"""Headless Debian chromium driven by selenium (chromium-driver), for the web view and HTML report tests.

    with chromium(tmp_path) as drv:           # skips the test with a clear message if there is no chromium
        drv.get(url)
        canvas_painted(drv, "#chart-latency canvas")

Installed by `.ci/run` (apt: chromium chromium-driver) when missing. Loopback only: the flags turn off
every background connection chromium would make on its own.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time

import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1800"]


def _find(*names):
    for n in names:
        path = shutil.which(n) or (n if os.path.exists(n) else None)
        if path:
            return path
    return None


def require_chromium() -> tuple[str, str]:
    """(chromium, chromedriver) paths, or skip the test saying why."""
    binary = _find("/usr/bin/chromium", "chromium", "chromium-browser")
    driver_path = _find("/usr/bin/chromedriver", "chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("chromium / chromedriver not installed (Debian: apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    return binary, driver_path


@contextlib.contextmanager
def chromium(tmp_path, page_load_timeout: float = 30.0):
    binary, driver_path = require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    profile.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    drv.set_page_load_timeout(page_load_timeout)
    drv.set_script_timeout(page_load_timeout)
    try:
        yield drv
    finally:
        drv.quit()


# painted pixels of a canvas: not every pixel equal to the first one (uPlot clears to transparent)
_PAINTED_JS = """
const c = document.querySelector(arguments[0]);
if (!c) return -1;
const ctx = c.getContext('2d');
const d = ctx.getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4) { if (d[i + 3] !== 0) n++; }
return n;
"""


def canvas_painted(drv, selector: str) -> int:
    """Number of non-transparent pixels of the canvas matched by ``selector`` (-1: no such canvas)."""
    return drv.execute_script(_PAINTED_JS, selector)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
