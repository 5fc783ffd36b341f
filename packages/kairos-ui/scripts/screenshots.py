"""Render a PNG of every admin UI page into docs/screenshots/ with headless Chromium,
in light and in dark mode.

    uv run python packages/kairos-ui/scripts/screenshots.py [--warmup 180] [--out DIR]

Starts two demo backends, a gateway on a temporary demo config (three hand-written
routes and a few dozen generated ones, so the Routes table has pages), and the UI (all
on free loopback ports), sends traffic through the gateway for ``--warmup`` seconds so
the charts have something to show (per-route history has one-minute steps: give it a
few minutes), then opens each page in Debian's chromium (through chromedriver) and
saves ``<page>.png``, then switches the UI to dark mode and saves ``<page>-dark.png``.
Everything it started is stopped at the end. Needs ``chromium`` and ``chromium-driver``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By

ROOT = Path(__file__).resolve().parents[3]
PAGES = {
    "dashboard": "/",
    "routes": "/routes",
    "backends": "/backends",
    "config": "/config",
    "metrics": "/metrics",
    "plugins": "/plugins",
    "audit": "/audit",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up within {timeout:g} s") from None
            time.sleep(0.2)


def start(stack: ExitStack, args: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    stack.callback(stop)


def demo_config(b1: int, b2: int) -> dict[str, object]:
    local = "http://127.0.0.1"
    return {
        "version": 1,
        "routers": [
            {
                "external_path": "/api/users/{id}",
                "internal_path": "/users/{id}",
                "methods": ["GET", "PUT", "DELETE"],
                "backends": [{"host": local, "port": b1, "health_check_path": "/health"}],
            },
            {
                "external_path": "/api/orders",
                "internal_path": "/orders",
                "methods": ["GET", "POST"],
                "backends": [
                    {"host": local, "port": b1, "weight": 3},
                    {"host": local, "port": b2},
                ],
                "load_balancing_strategy": "weighted",
                "retry_config": {"max_retries": 2, "initial_backoff_ms": 50},
                "rate_limit": {"requests_per_second": 50, "burst_size": 20},
            },
            {
                "external_path": "/static/{*path}",
                "internal_path": "/assets/{*path}",
                "methods": ["GET", "HEAD"],
                "backends": [{"host": local, "port": b2}],
                "cors": {"allowed_origins": ["https://app.example.com"]},
            },
            *generated_routes(b1, b2),
        ],
        "cors": {"allowed_origins": ["https://admin.example.com"]},
    }


#: Services of the generated routes: each gets a collection and an item route.
SERVICES = (
    "accounts", "billing", "catalog", "carts", "checkout", "coupons", "inventory",
    "invoices", "notifications", "payments", "pricing", "profiles", "reviews",
    "search", "sessions", "shipping", "stock", "tax", "wishlists", "webhooks",
)  # fmt: skip


def generated_routes(b1: int, b2: int) -> list[dict[str, object]]:
    local = "http://127.0.0.1"
    routes: list[dict[str, object]] = []
    for i, service in enumerate(SERVICES):
        backend = {"host": local, "port": b1 if i % 2 else b2}
        routes.append(
            {
                "external_path": f"/v2/{service}",
                "internal_path": f"/{service}",
                "methods": ["GET", "POST"],
                "backends": [backend],
            }
        )
        routes.append(
            {
                "external_path": f"/v2/{service}/{{id}}",
                "internal_path": f"/{service}/{{id}}",
                "methods": ["GET", "PUT", "DELETE"],
                "backends": [backend],
            }
        )
    return routes


def traffic(gateway: str, stop: threading.Event) -> None:
    paths = [
        "/api/users/1",
        "/api/users/2",
        "/api/orders",
        "/static/app.js",
        "/v2/catalog/7",
        "/v2/search",
        "/v2/carts/3",
        "/nope",
    ]
    rng = random.Random(7)
    while not stop.is_set():
        try:
            with urllib.request.urlopen(gateway + rng.choice(paths), timeout=2) as response:
                response.read()
        except (OSError, urllib.error.URLError):
            pass
        stop.wait(rng.uniform(0.01, 0.08))


def chrome() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1440,1000",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=float, default=180, help="seconds of traffic first")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    os.environ.setdefault("SE_OFFLINE", "true")
    args.out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        b1, b2, gw, ui_port = free_port(), free_port(), free_port(), free_port()
        start(stack, ["examples/demo_backend.py", str(b1)])
        start(stack, ["examples/demo_backend.py", str(b2)])
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(demo_config(b1, b2), indent=2))
        start(
            stack,
            ["-m", "kairos_gateway", "--config", str(config), "--port", str(gw)],
            {"KAIROS_ACCESS_LOG": "off", "KAIROS_HOST": "127.0.0.1"},
        )
        gateway = f"http://127.0.0.1:{gw}"
        wait_http(gateway + "/live")
        start(
            stack,
            ["-m", "kairos_ui"],
            {
                "KAIROS_GATEWAY_URL": gateway,
                "KAIROS_UI_PORT": str(ui_port),
            },
        )
        ui_url = f"http://127.0.0.1:{ui_port}"
        wait_http(ui_url + "/")
        stop = threading.Event()
        sender = threading.Thread(target=traffic, args=(gateway, stop), daemon=True)
        sender.start()
        stack.callback(sender.join, 5)
        stack.callback(stop.set)
        print(f"sending traffic for {args.warmup:g} s ...", flush=True)
        time.sleep(args.warmup)
        driver = chrome()
        stack.callback(driver.quit)
        driver.set_page_load_timeout(20)
        for suffix in ("", "-dark"):
            if suffix:  # the header's toggle; the choice is kept for the session
                driver.get(ui_url + "/")
                time.sleep(2)
                driver.find_element(By.XPATH, "//i[text()='dark_mode']/ancestor::button").click()
                time.sleep(1)
            render_pages(driver, ui_url, args.out, suffix)
    return 0


def save(driver: webdriver.Chrome, target: Path) -> None:
    driver.save_screenshot(str(target))
    print(f"wrote {target}", flush=True)


def render_pages(driver: webdriver.Chrome, ui_url: str, out: Path, suffix: str) -> None:
    for name, path in PAGES.items():
        driver.set_window_size(1440, 1000)
        driver.get(ui_url + path)
        driver.find_element(By.TAG_NAME, "body")
        time.sleep(3)  # first poll answered, charts drawn
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1440, max(900, min(int(height) + 40, 2400)))
        time.sleep(0.5)
        save(driver, out / f"{name}{suffix}.png")
    # The route editor, opened on a weighted route with retries and a rate limit.
    driver.set_window_size(1440, 1000)
    driver.get(ui_url + "/routes")
    time.sleep(2)
    driver.find_element(By.CSS_SELECTOR, '[data-testid="edit:/api/orders"]').click()
    time.sleep(1)
    for title in ("Retries", "Rate limit"):
        header = driver.find_element(
            By.XPATH, f"//div[contains(@class, 'q-dialog')]//div[text()='{title}']"
        )
        # A script click: the first section's opening animation moves the second.
        driver.execute_script("arguments[0].click()", header)
        time.sleep(0.8)
    height = driver.execute_script(
        "return document.querySelector('.q-dialog .q-card').scrollHeight"
    )
    driver.set_window_size(1440, max(1000, min(int(height) + 120, 2400)))
    time.sleep(0.5)
    save(driver, out / f"route-editor{suffix}.png")


if __name__ == "__main__":
    raise SystemExit(main())
