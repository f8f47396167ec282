"""The HTML report in a real browser: headless Chromium driven by chromedriver over the W3C WebDriver
HTTP protocol (plain urllib, no selenium). Every image must load and the page must log no console error.

Needs the Debian packages `chromium` and `chromium-driver` (or chromium/chromedriver on PATH, or
DEEPTUT_CHROMIUM / DEEPTUT_CHROMEDRIVER); skipped with the reason when they are absent.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("PIL")

pytestmark = pytest.mark.browser


def _find(env, *names):
    if os.environ.get(env):
        return os.environ[env]
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


CHROMIUM = _find("DEEPTUT_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = _find("DEEPTUT_CHROMEDRIVER", "chromedriver")


class WebDriver:
    """Just enough of the W3C WebDriver protocol."""

    def __init__(self, driver, browser, profile):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([driver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if self._call("GET", "/status")["ready"]:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1200,1600"]
        try:
            caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": browser, "args": args},
                    "goog:loggingPrefs": {"browser": "ALL"}}
            self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]
        except Exception:
            self.proc.kill()
            raise

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"webdriver {method} {path}: {e.read()[:500]!r}") from None

    def cmd(self, method, path, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def script(self, js, *args):
        return self.cmd("POST", "/execute/sync", {"script": js, "args": list(args)})

    def browser_log(self):
        for path in ("/se/log", "/log"):
            try:
                return self.cmd("POST", path, {"type": "browser"})
            except RuntimeError:
                continue
        raise RuntimeError("chromedriver offers no browser log")

    def close(self):
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("headless Chromium not installed (apt-get install -y chromium chromium-driver)")
    d = WebDriver(CHROMEDRIVER, CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    yield d
    d.close()


def test_report_renders_in_chromium(browser, tmp_path):
    from deeptut.viz import write_report
    from synthetic_run import make_synthetic_run, synthetic_test_data

    run = make_synthetic_run(tmp_path / "logistic-browser", "logistic", preset="<b>not bold</b>")
    report = write_report(run, data=synthetic_test_data())

    browser.cmd("POST", "/url", {"url": report.resolve().as_uri()})
    state = browser.script("return document.readyState")
    deadline = time.monotonic() + 20
    while state != "complete" and time.monotonic() < deadline:
        time.sleep(0.1)
        state = browser.script("return document.readyState")
    assert state == "complete"

    images = browser.script(
        "return Array.from(document.images).map(i => "
        "({alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}))")
    assert len(images) == 6
    for im in images:
        assert im["complete"] and im["w"] > 0 and im["h"] > 0, im
    assert {im["alt"] for im in images} >= {"learning curves", "confusion matrix", "misclassified digits"}
    assert browser.script("return document.querySelectorAll('b').length") == 3  # the escaped preset is text
    assert "<b>not bold</b>" in browser.script("return document.body.innerText")

    shot = base64.b64decode(browser.cmd("GET", "/screenshot"))
    assert shot.startswith(b"\x89PNG")
    (tmp_path / "report.png").write_bytes(shot)
    import PIL.Image

    with PIL.Image.open(tmp_path / "report.png") as im:
        assert im.width > 500 and len(im.convert("L").getcolors(1 << 16)) > 10

    errors = [e for e in browser.browser_log() if e.get("level") == "SEVERE"]
    assert errors == [], errors

    # the log check above is not vacuous: an error the page logs does show up
    browser.script("console.error('deeptut-probe')")
    assert any("deeptut-probe" in e.get("message", "") for e in browser.browser_log())
