"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
selenium) against the running system (supervisord + Hypercorn control server + 2 arq workers + the simulator),
with tokens on, so the page works the way it must in a secured deployment.

Checks: the page loads with no console error; the token pasted into the page opens the live feed; a
subscription made through the page's form shows ``active`` within 5 s; its event count rises; a simulator drop
(``POST /_sim/drop``, the simulator's control API) shows up on the page as a reconnect. Screenshots at 1280x800
and at phone width are saved as build artefacts: ``$FEEDPLANE_ARTIFACTS/dashboard.png`` and
``dashboard-phone.png`` when that is set (``.ci/run`` sets it), else in the test's tmp dir; never committed.

Selenium is blocking and the simulator runs on this test's event loop, so the browser part runs in a thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from scripts.simulator import ExchangeSimulator
from tests.e2e.harness import Feedplane, RedisServer, poll, workers_alive

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

TOKEN = "dashboard-control-token-0123456789"
TOPIC = "binanceusdm:trade:BTCUSDT"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _artefact_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("FEEDPLANE_ARTIFACTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _browser() -> Any:
    """Headless Chromium at 1280x800 that keeps the page's console messages."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,800", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _drive(base: str, sim_url: str, shot: Path) -> dict[str, Any]:
    """The browser scenario (blocking). Returns what it saw, for the assertions."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = _browser()

    def _wait(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
        """Re-check the page every 50 ms until ``check()`` is truthy (elements re-rendered meanwhile are retried)."""
        ignored = (NoSuchElementException, StaleElementReferenceException, ValueError)
        waiter = WebDriverWait(driver, timeout_s, poll_frequency=0.05, ignored_exceptions=ignored)
        return waiter.until(lambda _: check(), f"timed out after {timeout_s} s waiting for {what}")

    seen: dict[str, Any] = {}
    try:
        driver.get(f"{base}/dashboard")
        _wait(lambda: "token needed" in driver.find_element(By.ID, "feed-state").text, 10, "the token prompt")
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "token-apply").click()
        _wait(lambda: "live" in driver.find_element(By.ID, "feed-state").text, 10, "the live feed")

        Select(driver.find_element(By.ID, "sub-exchange")).select_by_value("binanceusdm")
        Select(driver.find_element(By.ID, "sub-kind")).select_by_value("trades")
        symbol = driver.find_element(By.ID, "sub-symbol")
        symbol.clear()
        symbol.send_keys("BTCUSDT")
        started = time.monotonic()
        driver.find_element(By.ID, "sub-add").click()
        row = f'tr[data-topic="{TOPIC}"]'
        _wait(lambda: driver.find_element(By.CSS_SELECTOR, f'{row}[data-state="active"] .state').text, 5,
              "the subscription made through the form to show active")  # fmt: skip
        seen["active_after_s"] = time.monotonic() - started
        seen["state_text"] = driver.find_element(By.CSS_SELECTOR, f"{row} .state").text
        seen["form_result"] = _wait(lambda: "200" in (t := driver.find_element(By.ID, "sub-result").text) and t, 5,
                                    "the subscribe answer")  # fmt: skip

        def events() -> int:
            return int(re.sub(r"\D", "", driver.find_element(By.CSS_SELECTOR, f"{row} .events").text) or 0)

        first = _wait(events, 5, "a first event count")
        seen["events"] = (first, _wait(lambda: events() > first and events(), 10, "the event count to rise"))

        request = urllib.request.Request(f"{sim_url}/_sim/drop", method="POST")
        with urllib.request.urlopen(request, timeout=5) as resp:
            seen["dropped"] = resp.read().decode()
        seen["reconnect"] = _wait(
            lambda: driver.find_element(By.CSS_SELECTOR, '#log li[data-kind="reconnect"]').text, 15,
            "a reconnect in the page's log",
        )  # fmt: skip
        seen["reconnects_cells"] = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "tr[data-conn] .reconnects")]
        _wait(lambda: driver.execute_script("return document.querySelectorAll('.uplot').length") == 2, 5, "charts")
        driver.save_screenshot(str(shot))
        seen["console"] = driver.get_log("browser")
        seen["overflow_px"] = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        # a phone (390 CSS px wide): nothing wider than the screen but the tables' own scrollers
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})  # fmt: skip
        width = "return document.documentElement.clientWidth"
        _wait(lambda: driver.execute_script(width) == 390, 5, "the phone width")
        seen["phone_overflow_px"] = driver.execute_script(width.replace("clientWidth", "scrollWidth") + " - 390")
        driver.save_screenshot(str(shot.with_name("dashboard-phone.png")))
        seen["console"] += driver.get_log("browser")
    except BaseException:
        driver.save_screenshot(str(shot.with_name("dashboard-failure.png")))  # what the page showed, for the report
        raise
    finally:
        driver.quit()
    return seen


async def test_dashboard_in_headless_chromium(tmp_path: Path) -> None:
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are required in CI (.ci/run installs chromium chromium-driver)")
        pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    server = RedisServer(tmp_path / "redis")
    await server.astart()
    sim = ExchangeSimulator(rate=40, loop=True)
    await sim.start()
    fp = Feedplane(tmp_path, sim, redis_url=server.url(), workers=2, env={"CONTROL_TOKEN": TOKEN})
    fp.start()
    await sim.preload()  # the tapes load (about 2 s) while supervisord starts, not on the first subscribe
    http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
    shot = _artefact_dir(tmp_path) / "dashboard.png"
    try:
        await poll(lambda: workers_alive(http, fp, 2), 60, "control server and 2 workers")
        seen = await asyncio.to_thread(_drive, fp.base, sim.http_url, shot)
    finally:
        await http.close()
        if fp.proc and fp.proc.poll() is None:
            await fp.stop()
        await sim.stop()
        await server.astop()
    print(f"dashboard screenshot (build artefact): {shot}")
    errors = [entry for entry in seen["console"] if entry.get("level") == "SEVERE"]
    assert errors == [], errors
    assert seen["active_after_s"] < 5 and "active" in seen["state_text"]
    assert "\u2714" in seen["state_text"]  # the state is told by an icon and text, not by colour alone
    first, later = seen["events"]
    assert later > first > 0
    assert '"dropped"' in seen["dropped"]
    assert "reconnect" in seen["reconnect"]
    assert any(re.match(r"[1-9]", text) for text in seen["reconnects_cells"]), seen["reconnects_cells"]
    assert seen["overflow_px"] == 0 and seen["phone_overflow_px"] == 0
    assert shot.stat().st_size > 10_000
    assert TOKEN not in fp.log.read_text(errors="replace")  # ?access_token= never reaches the logs
