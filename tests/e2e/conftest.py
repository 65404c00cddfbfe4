"""Browser tests: Playwright drives Debian's Chromium against a live server and a real worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import AsgiServer

# Playwright's sync API keeps an event loop in this thread; the ORM calls the
# tests make between browser steps are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "e2e"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


# Module-scoped, not session-scoped: while Playwright's sync API is open, its event
# loop counts as running in this thread, and Django's test client cannot call an
# async view (the status endpoint) from such a thread; pytest-django runs other
# modules' database tests between the browser modules.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def fast_polling(settings: Any) -> None:
    """The page polls every 3 s for people; the tests do not need to wait that long.

    Pages on `live_server` poll: that WSGI server holds a stream back until it
    ends, so live updates (the default) could never work there. Pages on
    `asgi_server` keep the product's default (that process reads the environment).
    """
    settings.CREATOR_POLL_MS = 300
    settings.CREATOR_USE_SSE = False


@contextmanager
def watched_page(browser: Browser, base_url: str) -> Iterator[Page]:
    """A new page at `base_url` that fails the test on any script error it logs."""
    context = browser.new_context(viewport=DESKTOP, base_url=base_url)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    yield page
    context.close()
    assert problems == [], problems


@pytest.fixture
def page(browser: Browser, live_server: Any) -> Iterator[Page]:
    with watched_page(browser, live_server.url) as page:
        yield page


def sign_in_as_alice(page: Page) -> Page:
    page.goto("/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("alice-password-1")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")
    # Signed in once the page has drawn its list and opened its stream: a test that
    # counts the page's requests from here on does not see the first load's.
    expect(page.locator("#creator")).to_have_attribute("data-loaded", "true")
    return page


@pytest.fixture
def signed_in(page: Page, alice: Any) -> Page:
    return sign_in_as_alice(page)


# --- the same page on the ASGI server ---------------------------------------------
# Server-Sent Events stream only under uvicorn: `live_server` is a WSGI threaded
# server that buffers a streaming response until it ends.


@pytest.fixture
def asgi_fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """`fast_polling` for the uvicorn process, which reads its settings from the environment."""
    monkeypatch.setenv("CREATOR_POLL_MS", "300")


@pytest.fixture
def asgi_page(asgi_fast_polling: None, browser: Browser, asgi_server: AsgiServer) -> Iterator[Page]:
    """Like `page`, against `asgi_server` (tests using it need `django_db(transaction=True)`)."""
    with watched_page(browser, asgi_server.url) as page:
        yield page


@pytest.fixture
def asgi_signed_in(asgi_page: Page, alice: Any) -> Page:
    # The tests hash with MD5 (tests/conftest.py), which the uvicorn process does
    # not accept; few iterations keep Django's default hasher quick here.
    hasher = PBKDF2PasswordHasher()
    alice.password = hasher.encode("alice-password-1", hasher.salt(), iterations=1000)
    alice.save(update_fields=["password"])
    return sign_in_as_alice(asgi_page)


def shot(page: Page, name: str) -> None:
    """Keep what the person saw at this step, as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
