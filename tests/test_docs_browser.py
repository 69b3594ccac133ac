"""The documentation page at ``/docs`` in a real headless Chromium, driven by Selenium,
against ``python bot.py --http-only`` wired to the Replicate emulator.

A person's visit: the page lists every route of the document, "Authorize" takes the API
token, "Try it out" on ``/image/generate`` shows the returned image and on
``/image/train`` uploads a zip. Nothing the page loads comes from elsewhere than the bot,
its Content-Security-Policy blocks nothing it needs, and a second visit is served from
the browser's cache. Screenshots are kept in
``$TEST_ARTIFACTS_DIR`` (default ``tests/artifacts/``).

Chromium and ChromeDriver are Debian's ``chromium`` and ``chromium-driver``; nothing is
downloaded at run time. Without them the test is skipped, except in CI, where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from api import OPENAPI_PATH
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import ROOT, BotProcess
from tests.helpers import zips
from tests.test_http_api import TOKEN, api_env

CHROMIUM = Path(os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
)
#: Seconds to wait for the page to react (generous: CI runs tests side by side).
WAIT = 45
GENERATE_PROMPT = "a red fox in the snow"  # the document's example request

#: Collects the page's CSP violations from before its first script runs.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""

T = TypeVar("T")

pytestmark = pytest.mark.timeout(240)


def artifacts_dir() -> Path:
    return Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / "tests" / "artifacts")


@pytest.fixture
def chromium(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        message = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # Selenium must never fetch a driver or a browser of its own.
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")


@pytest.fixture
async def bot_url(replicate_emu: ReplicateEmulator, tmp_path: Path) -> AsyncIterator[str]:
    """``python bot.py --http-only`` on a port of its choosing, read back from its log."""
    (tmp_path / "train").mkdir()
    env = api_env(replicate_emu, tmp_path, LOG_LEVEL="INFO")
    proc = BotProcess(env, cwd=tmp_path, args=("--http-only",))
    await proc.start()
    try:
        line = await proc.wait_for_log("web server listening", timeout=20)
        match = re.search(r"http://[\d.]+:\d+", line)
        assert match, line
        yield match.group(0)
        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0, proc.output[-3000:]
    finally:
        await proc.kill()


@dataclass
class Visit:
    """What the browser saw."""

    routes: set[tuple[str, str]] = field(default_factory=set)
    generate_status: str = ""
    image_size: tuple[int, int] = (0, 0)
    train_status: str = ""
    train_body: dict[str, Any] = field(default_factory=dict)
    resources: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)
    second_visit: dict[str, tuple[int, int]] = field(default_factory=dict)


def documented_routes() -> set[tuple[str, str]]:
    doc = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in methods
    }


class DocsBrowser:
    """Headless Chromium on one ``/docs`` page, acting as a person would (blocking)."""

    def __init__(self, base_url: str, work_dir: Path) -> None:
        self.base_url = base_url
        self.work_dir = work_dir
        options = Options()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={work_dir / 'chromium-profile'}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(
            executable_path=str(CHROMEDRIVER), log_output=str(work_dir / "chromedriver.log")
        )
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS}
        )

    def close(self) -> None:
        self.driver.quit()

    def wait(self, condition: Callable[[], T | None], what: str) -> T:
        def check(_driver: Any) -> T | None:
            try:
                return condition()
            except WebDriverException:
                return None

        return WebDriverWait(self.driver, WAIT, poll_frequency=0.2).until(
            check, f"waited {WAIT} s for {what}"
        )

    def find(self, css: str, within: WebElement | None = None) -> WebElement | None:
        found = (within or self.driver).find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and found[0].is_displayed() else None

    def click(self, css: str, within: WebElement | None = None) -> None:
        element = self.wait(lambda: self.find(css, within), css)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()

    def type_into(self, element: WebElement, text: str) -> None:
        """Replace the text of a React-controlled input (``clear()`` would not tell React)."""
        element.send_keys("\ue009a")  # Ctrl+A
        element.send_keys("\ue003")  # Backspace
        element.send_keys(text)

    def screenshot(self, name: str, element: WebElement | None = None) -> Path:
        if element is not None:
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        path = self.work_dir / name
        self.driver.save_screenshot(str(path))
        return path

    # ------------------------------------------------------------------ the visit

    def open(self) -> set[tuple[str, str]]:
        self.driver.get(self.base_url + "/docs")
        expected = len(documented_routes())
        self.wait(
            lambda: len(self.driver.find_elements(By.CSS_SELECTOR, ".opblock")) >= expected,
            "the operations to be listed",
        )
        routes = set()
        for block in self.driver.find_elements(By.CSS_SELECTOR, ".opblock"):
            method = block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text
            path = block.find_element(By.CSS_SELECTOR, ".opblock-summary-path")
            routes.add((method.strip().upper(), path.get_attribute("data-path") or ""))
        return routes

    def authorize(self, token: str) -> None:
        self.click(".auth-wrapper button.authorize")
        dialog = self.wait(lambda: self.find(".dialog-ux .modal-ux"), "the Authorize dialog")
        field_ = self.wait(lambda: self.find("input", dialog), "the token field")
        field_.send_keys(token)
        self.click("button.modal-btn.authorize", dialog)
        self.wait(lambda: self.find("button.btn-done", dialog), "the token to be taken")
        self.click("button.btn-done", dialog)
        self.wait(
            lambda: self.find(".auth-wrapper button.authorize.locked"),
            "the Authorize button to show the lock closed",
        )

    def try_out(self, operation_id: str) -> WebElement:
        """Expand the operation and press "Try it out"; the operation's block."""
        css = f"#operations-image-{operation_id}"
        self.click(f"{css} .opblock-summary-control")
        block = self.wait(lambda: self.find(css), operation_id)
        self.click(".try-out__btn", block)
        self.wait(lambda: self.find(".execute", block), "the Execute button")
        return block

    def execute(self, block: WebElement) -> str:
        """Press Execute; the status code shown in the response panel."""
        self.click(".execute", block)
        status = self.wait(
            lambda: self.find(".live-responses-table tr.response .response-col_status", block),
            "the server response",
        )
        return str(status.text.strip())

    def response_image(self, block: WebElement) -> tuple[WebElement, tuple[int, int]]:
        image = self.wait(lambda: self.find(".live-responses-table img", block), "the image")
        size = self.wait(
            lambda: self.driver.execute_script(
                "const i = arguments[0];"
                "return i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null;",
                image,
            ),
            "the image to load",
        )
        assert str(image.get_attribute("src")).startswith("blob:"), image.get_attribute("src")
        return image, (int(size[0]), int(size[1]))

    def response_json(self, block: WebElement) -> dict[str, Any]:
        body = self.wait(
            lambda: self.find(".live-responses-table .response-col_description pre", block),
            "the response body",
        )
        result: dict[str, Any] = json.loads(body.get_attribute("textContent") or "")
        return result

    def upload_fields(self, block: WebElement, zip_path: Path, **fields: str) -> None:
        upload = self.wait(
            lambda: block.find_element(
                By.CSS_SELECTOR, "tr[data-property-name=file] input[type=file]"
            ),
            "the file field",
        )
        upload.send_keys(str(zip_path))
        for name, value in fields.items():
            self.type_into(
                block.find_element(By.CSS_SELECTOR, f"tr[data-property-name={name}] input"),
                value,
            )

    def revisit(self) -> dict[str, tuple[int, int]]:
        """Open the page again: bytes transferred and body size of each file it loads."""
        self.open()
        sizes: dict[str, list[int]] = self.driver.execute_script(
            "const files = {};"
            "for (const e of performance.getEntriesByType('navigation')"
            "    .concat(performance.getEntriesByType('resource'))) {"
            "  files[new URL(e.name).pathname] = [e.transferSize, e.encodedBodySize];"
            "}"
            "return files;"
        )
        return {path: (int(sent), int(size)) for path, (sent, size) in sizes.items()}

    def leftovers(self, visit: Visit) -> None:
        visit.resources = list(
            self.driver.execute_script(
                "return [location.href].concat("
                "performance.getEntriesByType('resource').map(e => e.name));"
            )
        )
        visit.violations = list(self.driver.execute_script("return window.__cspViolations;"))
        visit.errors = [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if entry["level"] == "SEVERE"
        ]


def visit_docs(base_url: str, work_dir: Path, zip_path: Path) -> Visit:
    visit = Visit()
    browser = DocsBrowser(base_url, work_dir)
    try:
        visit.routes = browser.open()
        browser.screenshot("docs-page.png")
        browser.authorize(TOKEN)

        block = browser.try_out("generateImage")
        visit.generate_status = browser.execute(block)
        image, visit.image_size = browser.response_image(block)
        visit.screenshots.append(browser.screenshot("docs-generate.png", image))

        block = browser.try_out("startTraining")
        browser.upload_fields(block, zip_path, new_model_name="docs-fox", trigger_word="DOCSY")
        visit.train_status = browser.execute(block)
        visit.train_body = browser.response_json(block)
        status = block.find_element(By.CSS_SELECTOR, ".live-responses-table tr.response")
        visit.screenshots.append(browser.screenshot("docs-train.png", status))
        browser.leftovers(visit)
        visit.second_visit = browser.revisit()
    except Exception:
        browser.screenshot("docs-failure.png")
        raise
    finally:
        browser.close()
        keep = artifacts_dir()
        keep.mkdir(parents=True, exist_ok=True)
        for shot in work_dir.glob("docs-*.png"):
            shutil.copy(shot, keep / shot.name)
    return visit


async def test_a_person_reads_authorizes_and_tries_the_api_in_a_real_browser(
    chromium: None, bot_url: str, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    zip_path = zips.valid_training_zip(tmp_path / "photos.zip", n=3)
    visit = await asyncio.to_thread(visit_docs, bot_url, tmp_path, zip_path)

    assert visit.routes == documented_routes()

    assert visit.generate_status == "200"
    assert visit.image_size[0] > 0 and visit.image_size[1] > 0
    assert replicate_emu.last_prediction_input["prompt"] == GENERATE_PROMPT
    for shot in visit.screenshots:
        assert shot.stat().st_size > 10_000, shot

    assert visit.train_status == "201", visit.train_body
    assert visit.train_body["destination"] == f"{replicate_emu.username}/docs-fox"
    assert replicate_emu.counts["trainings_created"] == 1

    outside = [
        url
        for url in visit.resources
        if not url.startswith((bot_url + "/", "data:", f"blob:{bot_url}/"))
    ]
    assert not outside, outside
    assert any("/docs/swagger-ui-bundle.js" in url for url in visit.resources)
    assert not visit.violations, visit.violations
    assert not visit.errors, visit.errors

    # Seen again, the page is revalidated (a 304: fewer bytes transferred than its body)
    # and its assets come from the browser's cache (nothing transferred).
    sent, size = visit.second_visit["/docs"]
    assert 0 < sent < size, visit.second_visit
    for asset in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"):
        sent, size = visit.second_visit[asset]
        assert sent == 0 and size > 0, (asset, visit.second_visit)
