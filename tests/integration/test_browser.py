"""The coefficient service's pages in a real headless Chromium (Debian's `chromium` and `chromedriver`, driven by
selenium; no browser download) against a real `aerplane coefficient serve` on a real Redis, with no network beyond
loopback: every host name but 127.0.0.1 resolves to nothing (`--host-resolver-rules`), as on a GPU cluster without
internet. The API reference at /docs must render every operation of /openapi.json; the console's run page must plot
the steps a run reported over gRPC and a new one without a reload (its live stream is tested here too); no page may
send a request beyond 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import start_coefficient_service

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.timeout(300)
NO_BROWSER = "needs Debian's chromium and chromium-driver (scripts/bootstrap.sh installs them)"
LOOPBACK_ONLY = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
OPERATOR, READER = "operator-token", "read-token"
AS_READER, AS_OPERATOR = {"Authorization": f"Bearer {READER}"}, {"Authorization": f"Bearer {OPERATOR}"}


def browser_test(test: Any) -> Any:
    """A test that drives Chromium: marked `browser`, skipped where chromium or chromedriver is missing."""
    return pytest.mark.browser(pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=NO_BROWSER)(test))


@pytest.fixture
def service(tmp_path: Path, redis_url: str) -> Iterator[dict[str, str]]:
    """A real coefficient service with an operator and a read-only token (reads need a token too) and short console
    streams (the page must reconnect): its REST base and gRPC target."""
    env = {**os.environ, "AERPLANE_REDIS_URL": redis_url, "AERPLANE_API_TOKEN": OPERATOR}
    env.update(AERPLANE_API_READ_TOKEN=READER, AERPLANE_COEFFICIENT_STREAM_SECONDS="3")
    proc, http_port, grpc_port = start_coefficient_service(tmp_path, env)
    try:
        yield {"http": f"http://127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}"}
    finally:
        proc.stop(timeout=20)


@pytest.fixture
def coefficient_http(service: dict[str, str]) -> str:
    return service["http"]


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


def loopback_only(driver: Any, asset: str, answered: tuple[int, ...] = (401,)) -> None:
    """The page loaded `asset` and nothing from beyond 127.0.0.1, and logged no error (a failed load logs one) but
    the API's own answers with a status in `answered` (the console's first load, before a token is given, is a 401;
    a refused override a 409)."""
    urls = requested_urls(driver)
    assert any(u.endswith(asset) for u in urls), urls
    outside = [u for u in urls if not u.startswith(("http://127.0.0.1:", "data:", "blob:"))]
    assert not outside, f"the page reached outside loopback: {outside}"
    answers = tuple(f"the server responded with a status of {code} " for code in answered)
    failed = [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and not any(a in e["message"] for a in answers)
    ]
    assert not failed, failed


@browser_test
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


# --- the console ------------------------------------------------------------------------------------------------------

ENTROPIES = [2.0, 1.7, 1.2, 0.9]
EASY, HARD = [0.5, 0.75, 0.75, 1.0], [0.0, 0.25, 0.0, 0.5]  # accuracy per difficulty bucket, as the learner reports
LENGTHS = [212.0, 190.5, 171.25, 160.0]  # mean response length, tokens
MARKUP = "<i>level 5</i>"  # a difficulty label from the data, shown as text and never as markup


def report(target: str, run_id: str, steps: range) -> None:
    """A learner's calls over gRPC for `steps` of a 4-step run: α for the step's prompts, then the step's entropy
    with its figures (accuracy per difficulty, response length, the run's steps)."""
    from aerplane.coefficient.client import CoefficientClient

    with CoefficientClient(target, timeout=10) as client:
        if steps.start == 0:
            client.start_run(run_id, "aer", {"anchor_steps": 1, "eta": 0.05}, {})
        for step in steps:
            client.get_coefficients(run_id, step, [("a", 0.25, 4), ("b", 0.75, 4)])
            buckets = {"easy": EASY[step], "hard": HARD[step], MARKUP: 0.5}
            client.report_entropy(
                run_id,
                step,
                ENTROPIES[step],
                100,
                accuracy_by_difficulty=buckets,
                response_length=LENGTHS[step],
                total_steps=len(ENTROPIES),
            )


def read_events(lines: Iterator[str], count: int) -> list[tuple[str, int, Any]]:
    """The next `count` Server-Sent Events of a stream: (event, id, data)."""
    out: list[tuple[str, int, Any]] = []
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):  # a comment: the keep-alive
            continue
        if line:
            key, _, value = line.partition(": ")
            fields[key] = value
            continue
        if not fields:
            continue
        out.append((fields["event"], int(fields["id"]), json.loads(fields["data"])))
        fields = {}
        if len(out) == count:
            break
    return out


def test_the_stream_sends_the_history_then_each_new_step(service: dict[str, str]) -> None:
    report(service["grpc"], "live", range(2))
    url = f"{service['http']}/v1/runs/live/stream"
    with httpx.stream("GET", url, params={"since": 0}, headers=AS_READER, timeout=30) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.iter_lines()
        (kind, _, state), (kind2, next_step, rows) = read_events(lines, 2)
        assert (kind, kind2) == ("state", "history") and state["run_id"] == "live" and state["step"] == 1
        assert [r["mean_entropy"] for r in rows] == ENTROPIES[:2] and next_step == 2
        report(service["grpc"], "live", range(2, 3))
        events = read_events(lines, 2)
    assert [e[0] for e in events] == ["state", "history"] and events[1][1] == 3
    assert [r["step"] for r in events[1][2] if r["mean_entropy"] is not None] == [2]  # only what is new
    assert httpx.get(f"{service['http']}/v1/runs/nope/stream", headers=AS_READER).status_code == 404
    assert httpx.get(url).status_code == 401  # the stream is a read like any other


def test_a_closed_stream_lets_go_of_its_subscription_long_before_the_stream_would_end(
    tmp_path: Path, redis_url: str
) -> None:
    """A tab that closes is noticed at the next keep-alive (one per quiet poll, 1 s here), not when the stream's
    120 s are up: the service's Redis subscription for it is gone within a few polls."""
    import redis

    env = {**os.environ, "AERPLANE_REDIS_URL": redis_url, "AERPLANE_COEFFICIENT_STREAM_SECONDS": "120"}
    proc, http_port, grpc_port = start_coefficient_service(tmp_path, env)
    channel = "aerplane:kept:coefficient:changes"
    subscribers = redis.Redis.from_url(redis_url)
    try:
        report(f"127.0.0.1:{grpc_port}", "kept", range(1))
        url = f"http://127.0.0.1:{http_port}/v1/runs/kept/stream"
        with httpx.stream("GET", url, timeout=30) as resp:
            lines = resp.iter_lines()
            assert [e[0] for e in read_events(lines, 2)] == ["state", "history"]
            assert subscribers.pubsub_numsub(channel) == [(channel.encode(), 1)]
            assert next(line for line in lines if line) == ": keep-alive"  # a quiet poll later
        deadline = time.monotonic() + 20  # the stream itself would run for 120 s
        while subscribers.pubsub_numsub(channel)[0][1] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert subscribers.pubsub_numsub(channel)[0][1] == 0
    finally:
        subscribers.close()
        proc.stop(timeout=20)


@browser_test
def test_the_run_page_plots_the_reported_steps_and_a_new_one_without_a_reload(
    service: dict[str, str], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    report(service["grpc"], "console-run", range(3))
    use_token(browser, service["http"], READER)
    row = "tr[data-run='console-run']"
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
    cells = [c.text for c in browser.find_elements(By.CSS_SELECTOR, f"{row} td")]
    assert cells[1:3] == ["aer", "2 / 3"] and cells[6] == "0.500"  # strategy, step of steps, mean λ
    assert cells[-1] == "live"
    browser.find_element(By.LINK_TEXT, "console-run").click()

    def points(d: Any) -> int:
        return int(d.find_element(By.ID, "chart-entropy").get_attribute("data-points") or 0)

    WebDriverWait(browser, 30).until(lambda d: points(d) == 3)
    plotted = "return document.getElementById('chart-entropy').data.find(t => t.name === 'H').y"
    assert browser.execute_script(plotted) == ENTROPIES[:3]
    browser.execute_script("window.notReloaded = true")

    report(service["grpc"], "console-run", range(3, 4))  # a new step, the run's last, while the page is open
    WebDriverWait(browser, 30).until(lambda d: points(d) == 4)
    assert browser.execute_script(plotted) == ENTROPIES
    assert browser.execute_script("return window.notReloaded") is True
    trace = "const [chart, name] = arguments; return document.getElementById(chart).data.find(t => t.name === name).y"
    assert browser.execute_script(trace, "chart-accuracy", "easy") == EASY
    assert browser.execute_script(trace, "chart-accuracy", "hard") == HARD
    assert browser.execute_script(trace, "chart-accuracy", "all prompts") == [0.5] * 4
    assert browser.execute_script(trace, "chart-length", "response length") == LENGTHS
    legend = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#chart-accuracy .legendtext")]
    assert legend == ["all prompts", MARKUP, "easy", "hard"]  # the label's tags as text
    assert not browser.find_elements(By.CSS_SELECTOR, "#chart-accuracy .legendtext *")
    WebDriverWait(browser, 10).until(lambda d: "finished" in d.find_element(By.ID, "run-summary").text)
    time.sleep(4)  # past the 3 s stream: the page reconnects where it left off, nothing twice
    assert browser.execute_script(plotted) == ENTROPIES
    axis = "return document.getElementById('chart-entropy').layout.yaxis.title.text"
    assert browser.execute_script(axis) == "H (nats/token)"
    assert browser.find_element(By.ID, "run-updated").text != "never"
    browser.save_screenshot(str(tmp_path / "console-run.png"))
    loopback_only(browser, "/console/plotly.min.js")

    browser.get(f"{service['http']}/")  # the runs page: the run is finished now
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"{row} .badge.finished"))
    assert browser.find_elements(By.CSS_SELECTOR, f"{row} td")[2].text == "3 / 3"


def use_token(browser: Any, base: str, token: str) -> None:
    """Open the console and give it `token` the way a person does: the token field (kept in sessionStorage)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{base}/")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "token-state").text == "set")


def open_run_page(browser: Any, base: str, run_id: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{base}/runs/{run_id}")
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#f-strategy option")) > 1)
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#audit tbody tr"))


def field_error(browser: Any, field: str) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f".field-error[data-for='{field}']").text


@browser_test
def test_an_alpha_pin_through_the_form_changes_the_run_and_its_audit_and_a_409_shows_at_its_field(
    service: dict[str, str], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    report(service["grpc"], "steer", range(2))
    use_token(browser, service["http"], OPERATOR)
    open_run_page(browser, service["http"], "steer")
    submit = browser.find_element(By.ID, "override-submit")
    assert submit.is_enabled()

    browser.find_element(By.ID, "f-alpha").send_keys("0.004")
    submit.click()  # no reason: refused in the page, next to the reason field
    WebDriverWait(browser, 10).until(lambda d: field_error(d, "reason") == "a reason is required")
    browser.find_element(By.ID, "f-reason").send_keys("more exploration, from the console")
    submit.click()
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "override-result").text.startswith("applied"))
    state = httpx.get(f"{service['http']}/v1/runs/steer", headers=AS_READER).json()
    assert state["alpha_pinned"] and state["alpha"] == 0.004 and state["overrides"]["alpha"] == 0.004
    audit = httpx.get(f"{service['http']}/v1/runs/steer/audit", headers=AS_READER).json()
    assert audit[-1]["reason"] == "more exploration, from the console" and audit[-1]["actor"] == "operator"
    WebDriverWait(browser, 10).until(
        lambda d: "more exploration, from the console" in d.find_element(By.ID, "audit").text
    )

    # A change the run cannot take: 409, the API's own message next to the field it names.
    browser.find_element(By.ID, "f-alpha").send_keys("0.5")
    browser.find_element(By.ID, "f-reason").send_keys("too far")
    submit.click()
    WebDriverWait(browser, 10).until(lambda d: field_error(d, "alpha"))
    assert field_error(browser, "alpha").startswith("alpha: must be within [alpha_min, alpha_max]")
    assert httpx.get(f"{service['http']}/v1/runs/steer", headers=AS_READER).json()["alpha"] == 0.004
    browser.save_screenshot(str(tmp_path / "console-steer.png"))
    loopback_only(browser, "/console/assets/console.js", answered=(401, 409))


@browser_test
def test_a_read_only_token_sees_the_run_but_cannot_submit(service: dict[str, str], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    report(service["grpc"], "watched", range(2))
    use_token(browser, service["http"], READER)
    open_run_page(browser, service["http"], "watched")
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "override-readonly").is_displayed())
    assert not browser.find_element(By.ID, "override-submit").is_enabled()
    assert "may read but not change runs" in browser.find_element(By.ID, "override-readonly").text
    assert browser.find_element(By.ID, "chart-entropy").get_attribute("data-points") == "2"
