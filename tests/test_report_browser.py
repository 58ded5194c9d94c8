"""The report page in a real headless Chromium, served by a real `kat serve` on loopback.

Checks every panel rendered, the culprit labelled, no console error, and that no request leaves
the machine; saves a screenshot (also to $KAT_REPORT_SCREENSHOT when set: docs/report-demo.png).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest
from test_frontends_util import free_port, incidents_root

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

# (base URL, job id by incident name) of the `server` fixture
Served = tuple[str, dict[str, str]]

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and DRIVER.exists()):
    pytest.skip(
        "needs the Debian packages chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): "
        "apt-get install chromium chromium-driver, or `make sysdeps`",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")

REAL_PAIR = Path(__file__).parent / "data" / "real-traces" / "hta_sampled_pair"
NETWORK_SCHEMES = ("http", "https", "ws", "wss", "ftp")  # other schemes (data:, about:, chrome:) never leave the machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("serve")
    root = incidents_root(tmp)
    shutil.copytree(REAL_PAIR, root / "real-pair")
    port = free_port()
    env = {**os.environ, "KAT_CACHE_DIR": str(tmp / "cache")}
    kat = Path(sys.executable).with_name("kat")  # the console script (plugins register through it)
    cmd = [
        str(kat) if kat.exists() else shutil.which("kat") or "kat",
        "serve",
        "--port",
        str(port),
        "--incidents-root",
        str(root),
        "--db",
        str(tmp / "kat.sqlite"),
    ]
    log = open(tmp / "serve.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"kat serve did not start: {(tmp / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.3)
        ids: dict[str, str] = {}
        for name in ("team-a/demo-incident", "real-pair"):
            r = httpx.post(base + "/v1/diagnoses", json={"incident": name}, timeout=10)
            assert r.status_code == 202, r.text
            ids[name] = r.json()["id"]
            assert r.json()["links"]["report"] == f"/v1/incidents/{ids[name]}/report"
        deadline = time.time() + 300
        for jid in ids.values():
            while (st := httpx.get(f"{base}/v1/diagnoses/{jid}", timeout=10).json())["status"] not in ("done", "error"):
                assert time.time() < deadline, "diagnosis did not finish"
                time.sleep(0.5)
            assert st["status"] == "done", st
        yield base, ids
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless",
        "--no-sandbox",  # tests run as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1000,1200",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _requested_urls(driver: WebDriver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls + driver.execute_script("return performance.getEntries().map(e => e.name)")


def _load(driver: WebDriver, url: str) -> None:
    driver.get_log("performance")  # drop what earlier pages logged
    driver.get_log("browser")
    driver.get(url)
    assert driver.execute_script("return document.readyState") == "complete"


def _check_page(driver: WebDriver, base: str) -> None:
    from selenium.webdriver.common.by import By

    for panel in ("verdict", "heatmap", "timeline", "metrics", "chain", "notes"):
        sec = driver.find_element(By.CSS_SELECTOR, f'section[data-panel="{panel}"]')
        assert sec.is_displayed() and sec.size["height"] > 40, panel
    for panel in ("heatmap", "timeline"):
        svgs = driver.find_elements(By.CSS_SELECTOR, f'section[data-panel="{panel}"] svg')
        assert svgs and all(s.size["width"] > 300 and s.size["height"] > 50 for s in svgs), panel
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
    urls = _requested_urls(driver)
    assert driver.current_url in urls  # the request log works: the page itself is in it
    outside = [u for u in urls if urlsplit(u).scheme in NETWORK_SCHEMES and urlsplit(u).hostname not in ("127.0.0.1", "localhost", "::1")]
    assert not outside, outside


def test_demo_report_in_chromium(server: Served, browser: WebDriver, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    base, ids = server
    jid = ids["team-a/demo-incident"]
    _load(browser, f"{base}/v1/incidents/{jid}/report")
    _check_page(browser, base)
    for panel in ("metrics", "chain"):
        assert browser.find_elements(By.CSS_SELECTOR, f'section[data-panel="{panel}"] svg'), panel
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".culprit-label")]
    assert labels and all(t == "rank 4 ◀ culprit" for t in labels)
    assert browser.find_element(By.CSS_SELECTOR, ".verdict .culprit").text == "4"
    # A chain link's evidence id is clickable and lands on the evidence row.
    ref = browser.find_element(By.CSS_SELECTOR, "a.ev-ref")
    target = ref.get_dom_attribute("href").split("#", 1)[1]
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", ref)
    assert browser.execute_script("return location.hash") == f"#{target}"
    assert browser.find_element(By.ID, target).is_displayed()
    # Screenshot of the whole page.
    browser.execute_script("window.scrollTo(0, 0)")
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1000, min(int(height) + 40, 8000))
    shot = tmp_path / "report-demo.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 50_000
    if os.environ.get("KAT_REPORT_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["KAT_REPORT_SCREENSHOT"])
    browser.set_window_size(1000, 1200)
    # The page by incident name resolves to its latest finished diagnosis; unknown ones are 404.
    r = httpx.get(f"{base}/v1/incidents/demo-gpu_thermal_throttling/report", timeout=60)
    assert r.status_code == 200 and "rank 4 ◀ culprit" in r.text and "default-src 'none'" in r.headers["content-security-policy"]
    assert httpx.get(f"{base}/v1/incidents/no-such-incident/report", timeout=10).status_code == 404


def test_real_trace_report_in_chromium(server: Served, browser: WebDriver) -> None:
    from selenium.webdriver.common.by import By

    base, ids = server
    _load(browser, f"{base}/v1/incidents/{ids['real-pair']}/report")
    _check_page(browser, base)
    metrics = browser.find_element(By.CSS_SELECTOR, 'section[data-panel="metrics"]').text
    assert "missing data" in metrics  # a bare trace directory has no metrics: said, not hidden
