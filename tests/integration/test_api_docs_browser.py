"""The API reference at /docs, opened in a real headless Chromium (Debian's `chromium` and `chromedriver`, driven by
selenium; no browser download) against a real `aerplane coefficient serve` on a real Redis, with no network beyond
loopback: every host name but 127.0.0.1 resolves to nothing (`--host-resolver-rules`), as on a GPU cluster without
internet. Swagger UI must render every operation of /openapi.json, and no request may leave 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aerplane.common.process import ManagedProcess, free_port

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.timeout(300)
NO_BROWSER = "needs Debian's chromium and chromium-driver (scripts/bootstrap.sh installs them)"
LOOPBACK_ONLY = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@pytest.fixture
def coefficient_http(tmp_path: Path, redis_url: str) -> Iterator[str]:
    """A real coefficient service (with an API token, so the document declares its bearer routes); its REST base."""
    http_port = free_port()
    env = {**os.environ, "AERPLANE_REDIS_URL": redis_url, "AERPLANE_API_TOKEN": "docs-token"}
    argv = [sys.executable, "-m", "aerplane.cli", "coefficient", "serve", "--host", "127.0.0.1"]
    argv += ["--grpc-port", str(free_port()), "--http-port", str(http_port)]
    proc = ManagedProcess(
        "coefficient",
        argv,
        env=env,
        log_path=tmp_path / "coefficient.log",
        ready_url=f"http://127.0.0.1:{http_port}/readyz",
    )
    proc.start().wait_ready(60)
    try:
        yield f"http://127.0.0.1:{http_port}"
    finally:
        proc.stop(timeout=20)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    options.add_argument(f"--host-resolver-rules={LOOPBACK_ONLY}")
    options.add_argument("--no-proxy-server")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(
        options=options, service=Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    )
    try:
        yield driver
    finally:
        driver.quit()


def operations(schema: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return {(m.upper(), path) for path, ops in schema["paths"].items() for m in ops if m in methods}


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked for (Chrome's DevTools Network events in the performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def loopback_only(driver: Any, asset: str) -> None:
    """The page loaded `asset` and nothing from beyond 127.0.0.1, and logged no error (a failed load logs one)."""
    urls = requested_urls(driver)
    assert any(u.endswith(asset) for u in urls), urls
    outside = [u for u in urls if not u.startswith(("http://127.0.0.1:", "data:", "blob:"))]
    assert not outside, f"the page reached outside loopback: {outside}"
    failed = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not failed, failed


@pytest.mark.browser
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=NO_BROWSER)
def test_docs_render_every_operation_with_no_request_beyond_loopback(
    coefficient_http: str, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    schema = httpx.get(f"{coefficient_http}/openapi.json").json()
    expected = operations(schema)
    assert len(expected) >= 6  # the /v1 routes (the ops routes are not in the document)

    browser.get(f"{coefficient_http}/docs")
    WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= len(expected))
    rendered = set()
    for block in browser.find_elements(By.CSS_SELECTOR, ".opblock"):
        method = block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text.strip().upper()
        path = block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path")
        rendered.add((method, path))
    browser.save_screenshot(str(tmp_path / "docs.png"))
    assert rendered == expected, f"missing {expected - rendered}, unexpected {rendered - expected}"
    assert browser.find_element(By.CSS_SELECTOR, ".info .title").text.startswith(schema["info"]["title"])
    loopback_only(browser, "/docs/assets/swagger-ui-bundle.js")

    # The control: this browser cannot reach a CDN at all, so what rendered came from the service.
    fetch = "const [url, done] = arguments; fetch(url, {mode: 'no-cors'}).then(() => done('ok'), () => done('failed'))"
    cdn = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"
    assert browser.execute_async_script(fetch, cdn) == "failed"


def test_redoc_is_off_and_docs_name_only_our_own_assets(coefficient_http: str) -> None:
    """ReDoc's bundle fetches its logo from its vendor's CDN even when served locally (this browser test saw
    cdn.redoc.ly), so /redoc is off; /docs names no other host."""
    assert httpx.get(f"{coefficient_http}/redoc").status_code == 404
    html = httpx.get(f"{coefficient_http}/docs").text
    assert "https://" not in html and "http://" not in html
    assert httpx.get(f"{coefficient_http}/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
