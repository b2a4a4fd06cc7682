"""End to end: `nanolens explore` serves the real app on 127.0.0.1 and headless Chromium (Debian's
/usr/bin/chromium, driven by Playwright; no browser download) types a prompt, waits for the
attention heat map and for the steered generation, checks that the page asked nothing of the
network beyond the app itself, and saves a screenshot (in the test's temporary folder; set
NANOLENS_SCREENSHOT=docs/app.png to refresh the README's picture). It serves a tiny model trained for 30 iterations, or the runs in
NANOLENS_BROWSER_RUNS when set (a trained model makes a better picture).

Skipped, with the reason, when Chromium or Playwright's Python package is missing (`.ci/run`
installs both).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("NANOLENS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOT_ENV = os.environ.get("NANOLENS_SCREENSHOT")  # None: a temporary file (a test never rewrites the repo)
PROMPT = "The sky was bright and she felt happy."

if not Path(CHROMIUM).is_file() and not shutil.which(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's package with `apt-get install -y chromium` "
                "(or set NANOLENS_CHROMIUM) to run the browser test", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed "
                               "(pip install playwright; its browser download is not needed)")

from nanolens.apps.demo_run import make_run  # noqa: E402

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the app did not answer at {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if os.environ.get("NANOLENS_BROWSER_RUNS"):  # e.g. a trained run, for a README screenshot worth looking at
        runs = Path(os.environ["NANOLENS_BROWSER_RUNS"])
    else:
        runs = tmp_path_factory.mktemp("browser") / "runs"
        make_run(runs / "tiny", iters=30, eval_interval=10)
    port = _free_port()
    env = dict(os.environ, NANOLENS_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "nanolens", "explore", "--runs", str(runs), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        first = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in first, first  # the CLI prints the local address first
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc)
        yield url
    finally:
        _stop_group(proc)


def _group_alive(group: int) -> bool:
    """Is any process of the group still running (zombies, which only wait to be reaped, excepted)?"""
    proc_dir = Path("/proc")
    if proc_dir.is_dir():
        for stat in proc_dir.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[2]) == group:
                return True
        return False
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the app's process group: SIGTERM, then SIGKILL for whatever is left after 15 s."""
    group = proc.pid
    for sig, patience in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        if not _group_alive(group):
            break
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + patience
        while _group_alive(group) and time.time() < deadline:
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
    proc.wait(timeout=10)
    proc.stdout.close()


def test_explorer_in_headless_chromium(app_url, tmp_path):
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1350})
            page.on("request", lambda r: requests.append(r.url))
            page.set_default_timeout(120_000)

            # Attention: type a prompt, wait for one heat map per head over its tokens
            page.goto(f"{app_url}/?page=attention")
            prompt = page.get_by_label("Prompt")
            prompt.wait_for()
            prompt.fill(PROMPT)
            prompt.press("Control+Enter")
            page.wait_for_function(
                """([n]) => {
                    const plot = document.querySelector('.js-plotly-plot');
                    if (!plot || !plot.data) return false;
                    const heat = plot.data.filter(t => t.type === 'heatmap');
                    return heat.length > 0 && heat.every(h => h.y.length === n);
                }""", arg=[len(PROMPT)])
            page.wait_for_function(
                """([n]) => { const v = document.querySelector('.nanolens-token-view');
                              return v && v.querySelectorAll('span').length === n; }""", arg=[len(PROMPT)])
            assert page.locator('[data-testid="stException"]').count() == 0
            prompt.blur()
            time.sleep(1.0)  # let plotly finish drawing before the picture
            shot = Path(SCREENSHOT_ENV) if SCREENSHOT_ENV else tmp_path / "app.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000

            # the head grid: clicking a cell picks that head
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2")
            grid = page.locator(".js-plotly-plot").nth(1)
            grid.scroll_into_view_if_needed()
            x, y, label = page.evaluate("""() => {
                const gd = document.querySelectorAll('.js-plotly-plot')[1];
                const pick = gd.data.find(t => t.type === 'scatter'), i = pick.customdata.length - 1;
                const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
                return [r.left + xa._offset + xa.d2p(pick.x[i]), r.top + ya._offset + ya.d2p(pick.y[i]), pick.customdata[i]];
            }""")
            assert label != "L0H0"
            page.mouse.click(x, y)
            page.get_by_text(f"Token view: {label}").wait_for()

            # Steering: unsteered and steered side by side, each with its sentiment score
            page.locator('[data-testid="stSidebar"]').get_by_text("Steering", exact=True).click()
            page.get_by_text("Steering playground").wait_for()
            slider = page.get_by_role("slider", name="Coefficient (× the layer's typical residual norm)")
            slider.focus()
            slider.press("End")  # the largest coefficient, +10
            page.get_by_text("Steered: +10", exact=False).wait_for()
            page.get_by_text("steering touched", exact=False).wait_for()
            # the rerun replaces the columns' elements one by one: wait (not count once) for both scores
            sync_api.expect(page.get_by_text("Sentiment of the continuation")).to_have_count(2, timeout=120_000)
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(tmp_path / "steering.png"))
        finally:
            browser.close()
    outside = [u for u in requests if not u.startswith(app_url) and not u.startswith(("data:", "blob:", "about:"))]
    assert outside == [], f"the page reached beyond the app: {outside[:5]}"
