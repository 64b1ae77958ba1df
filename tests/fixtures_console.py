"""Fixtures for the web console's browser tests: the console built, Debian's Chromium (installed when missing)
driven by Playwright, and pages on the process suite's gateway as `make run` starts it.

Every page records what the browser reports as an error (a CSP violation, an uncaught exception) and is
photographed into test-artifacts/console/ when its test fails; each screen a test shows (Pages.shot) is
photographed there too and scanned with axe-core; any of these fails the test.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from kernel.settings import ROOT
from suite.processes import console_built
from tests.debian import ensure_package

ARTIFACTS = ROOT / "test-artifacts" / "console"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1200, "height": 900}
# The machine is shared (2 cores, a loaded make test): waits are generous, since a wait that passes returns at
# once and only a failing test waits them out.
expect.set_options(timeout=20_000)
ACTION_TIMEOUT_MS = 30_000


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def console_dist() -> Path:
    """console/dist, built with `make console` when it is not (`make test` builds it before pytest starts)."""
    if not console_built():
        subprocess.run(["make", "console"], cwd=ROOT, check=True, timeout=600)
    return ROOT / "console" / "dist"


@pytest.fixture(scope="session")
async def browser():
    executable = ensure_package("chromium", _chromium)
    async with async_playwright() as playwright:
        # --no-sandbox: CI and developers run the tests as root, where Chromium's sandbox cannot start.
        launched = await playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        await launched.close()


@pytest.fixture(scope="session")
def console_url(console_dist, gateway_base) -> str:
    """The suite's gateway; the suite was started after the console was built, so it serves it."""
    return gateway_base


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_FAILED] = report.failed


_FAILED = pytest.StashKey[bool]()


class Pages:
    """Opens pages in fresh browser contexts (separate sessions) and keeps what the browser complained of."""

    def __init__(self, browser: Browser, base: str, name: str):
        self.browser, self.base, self.name = browser, base, name
        self.contexts: list = []
        self.pages: list[Page] = []
        self.problems: list[str] = []

    async def open(self, path: str = "/", viewport: dict | None = None) -> Page:
        context = await self.browser.new_context(viewport=viewport or DESKTOP, base_url=self.base)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        self.contexts.append(context)
        page = await context.new_page()
        page.on("console", lambda m: m.type == "error" and self._problem(m.text))
        page.on("pageerror", lambda e: self._problem(f"uncaught: {e}"))
        self.pages.append(page)
        await page.goto(path)
        return page

    def _problem(self, text: str) -> None:
        # A refused API call (400, 409) is the browser's "failed to load resource": the tests cause those.
        if "Failed to load resource" not in text:
            self.problems.append(text)

    async def shot(self, page: Page, label: str) -> Path:
        """A screenshot of the screen, and its accessibility scan (violations fail the test at its end)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{label}.png"
        await page.screenshot(path=str(path), full_page=True)
        self.problems += [f"{label}: {problem}" for problem in await accessibility_problems(page)]
        return path

    async def photograph(self, page: Page, label: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"{label}.png"), full_page=True)

    async def close(self, failed: bool) -> None:
        if failed:
            for number, page in enumerate(self.pages):
                await self.photograph(page, f"FAILED-{self.name}-{number}")
        for context in self.contexts:
            await context.close()


@pytest.fixture
async def pages(browser, console_url, request):
    opened = Pages(browser, console_url, request.node.name)
    yield opened
    await opened.close(request.node.stash.get(_FAILED, True))
    assert not opened.problems, f"the browser reported: {opened.problems}"


AXE = ROOT / "console" / "node_modules" / "axe-core" / "axe.min.js"


async def accessibility_problems(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is (WCAG 2 A and AA rules)."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text())  # evaluated by the driver: the page's CSP does not apply
    result = await page.evaluate(
        "async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']})).violations"
        ".filter(v => ['serious', 'critical'].includes(v.impact))"
        ".map(v => `${v.id}: ${v.help} (${v.nodes.map(n => n.target.join(' ')).join(', ')})`)"
    )
    return result
