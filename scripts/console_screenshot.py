"""A screenshot of the console's run page of a live run, as the README shows it: Debian's headless chromium through
selenium (what the browser tests use), loopback only.

    aerplane up ... &                       # prints `console: http://127.0.0.1:PORT/runs/RUN`
    .venv/bin/python scripts/console_screenshot.py http://127.0.0.1:PORT/runs/RUN docs/console.png [--token T]
"""

from __future__ import annotations

import argparse
import shutil
import time
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the run page, e.g. http://127.0.0.1:8000/runs/RUN")
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("--token", default="", help="an API token, when the service requires one for reads")
    parser.add_argument("--min-points", type=int, default=2, help="wait until the charts hold this many steps")
    parser.add_argument("--size", default="1400,1500", help="window size, W,H (the five charts and the form's top)")
    args = parser.parse_args()

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={args.size}")
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
    try:
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(args.url))
        driver.get(f"{origin}/")
        driver.execute_script("sessionStorage.setItem('aerplane.token', arguments[0])", args.token)
        driver.get(args.url)
        chart = (By.ID, "chart-entropy")
        WebDriverWait(driver, 120).until(
            lambda d: int(d.find_element(*chart).get_attribute("data-points") or 0) >= args.min_points
        )
        time.sleep(1.0)  # the audit table and the last chart
        driver.save_screenshot(args.out)
    finally:
        driver.quit()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
