"""Settings → Webhooks on the creator page: add an endpoint, see its secret once, turn it off and
on, make a new secret, delete it, read its deliveries and send one again; and the message at load
about an endpoint turned off after failing for a day.

The page runs on `live_server`, in this process: the `settings` fixture reaches it, so
`WEBHOOK_ALLOW_PRIVATE_ADDRESSES` lets the loopback receiver in (or, left off, keeps it out).
No worker runs: a message sent again stays pending in the broker, which is what the page asked for.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Locator, Page, expect

from tests.e2e.conftest import ARTIFACTS, DESKTOP, PHONE, shot
from tests.receiver import receiver
from tests.waiting import wait_for
from webhooks.models import EVENT_TYPES, Attempt, Delivery, DeliveryState, Endpoint

pytestmark = pytest.mark.django_db(transaction=True)

FAILED_FOR_A_DAY = (
    "Turned off: every delivery failed for a day. Fix the receiver, then turn the endpoint back on."
)
METADATA_URL = "http://169.254.169.254/latest"


@pytest.fixture
def loopback_allowed(settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True


def loaded(page: Page) -> Page:
    """Reload and wait until the page has drawn the endpoints it was given."""
    page.reload()
    expect(page.locator("#webhooks")).to_have_attribute("data-loaded", "true")
    return page


def endpoint_row(page: Page, endpoint: Endpoint) -> Locator:
    return page.locator(f'#webhook-list .webhook[data-id="{endpoint.pk}"]')


def make_endpoint(owner: User, url: str, **fields: Any) -> Endpoint:
    return Endpoint.objects.create(owner=owner, url=url, events=list(EVENT_TYPES), **fields)


def refreshed(endpoint: Endpoint) -> Endpoint:
    endpoint.refresh_from_db()
    return endpoint


def open_add_form(page: Page) -> None:
    if page.locator("#webhook-add[open]").count() == 0:
        page.get_by_text("Add an endpoint").click()
    expect(page.locator("#webhook-form")).to_be_visible()


def add_from_the_page(page: Page, url: str, description: str = "") -> Locator:
    """Fill the add form and send it; answers the form."""
    open_add_form(page)
    form = page.locator("#webhook-form")
    form.get_by_label("Address (URL)").fill(url)
    form.get_by_label("Description").fill(description)
    form.get_by_role("button", name="Add endpoint").click()
    return form


def test_alice_adds_an_endpoint_and_sees_its_secret_once(
    signed_in: Page, alice: User, loopback_allowed: None
) -> None:
    page = signed_in
    with receiver() as hook:
        open_add_form(page)
        boxes = page.locator("#webhook-form input[name=events]")
        expect(boxes).to_have_count(len(EVENT_TYPES))
        for event_type in EVENT_TYPES:
            expect(page.get_by_label(event_type, exact=True)).to_be_checked()
        page.get_by_label("job.progress", exact=True).uncheck()
        add_from_the_page(page, hook.url, description="Alice's render farm")

        endpoint = wait_for(lambda: Endpoint.objects.filter(owner=alice).first(), "the endpoint")
        assert endpoint.url == hook.url
        assert endpoint.events == ["job.started", "job.completed", "job.failed", "job.cancelled"]
        assert endpoint.description == "Alice's render farm"
        row = endpoint_row(page, endpoint)
        expect(row).to_contain_text(hook.url)
        expect(row).to_contain_text("Alice's render farm")
        expect(row.get_by_label("Signing secret")).to_have_text(endpoint.secret)
        expect(row).to_contain_text("it will not be shown again")
        expect(row.get_by_role("button", name="Copy")).to_be_focused()
        expect(page.locator("#webhook-add")).not_to_have_attribute("open", "")
        shot(page, "webhooks-01-secret-shown-once")

        page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        row.get_by_role("button", name="Copy", exact=True).click()
        expect(row.get_by_role("button", name="Copied", exact=True)).to_be_visible()
        assert page.evaluate("() => navigator.clipboard.readText()") == endpoint.secret

        loaded(page)
        expect(endpoint_row(page, endpoint)).to_contain_text(hook.url)
        expect(page.locator(".webhook-secret")).to_have_count(0)
        assert endpoint.secret not in page.content()


def test_a_private_address_is_refused_beside_the_address_field(
    signed_in: Page, alice: User, settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    page = signed_in
    form = add_from_the_page(page, METADATA_URL)

    field = form.get_by_label("Address (URL)")
    expect(form.locator("#webhook-url-error")).to_contain_text(
        "private, loopback or link-local address"
    )
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_be_focused()
    expect(form.get_by_role("alert").first).to_contain_text("169.254.169.254")
    shot(page, "webhooks-02-private-address-refused")
    assert not Endpoint.objects.filter(owner=alice).exists()


def test_alice_turns_an_endpoint_off_and_on_makes_a_new_secret_and_deletes_it(
    signed_in: Page, alice: User, loopback_allowed: None
) -> None:
    with receiver() as hook:
        endpoint = make_endpoint(alice, hook.url)
        old_secret = endpoint.secret
        page = loaded(signed_in)
        row = endpoint_row(page, endpoint)
        switch = row.get_by_role("switch")
        expect(switch).to_be_checked()

        switch.click()
        wait_for(lambda: not refreshed(endpoint).enabled, "the endpoint to be off")
        assert endpoint.disabled_reason == "Turned off by you."
        expect(row).to_contain_text("Turned off by you.")
        expect(switch).not_to_be_checked()

        switch.click()
        wait_for(lambda: refreshed(endpoint).enabled, "the endpoint to be back on")
        expect(row).not_to_contain_text("Turned off by you.")

        row.get_by_role("button", name=f"New secret for {hook.url}").click()
        page.get_by_role("alertdialog").get_by_role("button", name="Keep the secret").click()
        expect(page.get_by_role("alertdialog")).to_have_count(0)
        assert refreshed(endpoint).secret == old_secret

        row.get_by_role("button", name=f"New secret for {hook.url}").click()
        page.get_by_role("alertdialog").get_by_role("button", name="Make a new secret").click()
        wait_for(lambda: refreshed(endpoint).secret != old_secret, "a new secret")
        assert endpoint.previous_secret == old_secret
        expect(row.get_by_label("Signing secret")).to_have_text(endpoint.secret)
        expect(row).to_contain_text("The old secret keeps working for a day")
        shot(page, "webhooks-03-new-secret")

        row.get_by_role("button", name=f"Delete {hook.url}").click()
        page.get_by_role("alertdialog").get_by_role("button", name="Keep it").click()
        expect(page.get_by_role("alertdialog")).to_have_count(0)
        assert Endpoint.objects.filter(pk=endpoint.pk).exists()

        row.get_by_role("button", name=f"Delete {hook.url}").click()
        question = page.get_by_role("alertdialog")
        expect(question).to_contain_text(hook.url)
        question.get_by_role("button", name="Delete").click()
        wait_for(lambda: not Endpoint.objects.filter(pk=endpoint.pk).exists(), "the deletion")
        expect(row).to_have_count(0)
        expect(page.locator("#webhooks-empty")).to_be_visible()


def test_an_endpoint_turned_off_for_failing_is_told_at_load_and_turned_back_on(
    signed_in: Page, alice: User
) -> None:
    broken = make_endpoint(
        alice,
        "https://hooks.example.com/videos",
        disabled_at=timezone.now(),
        disabled_reason=FAILED_FOR_A_DAY,
        failing_since=timezone.now() - timedelta(days=1),
    )
    make_endpoint(
        alice,
        "https://quiet.example.com/off",
        disabled_at=timezone.now(),
        disabled_reason="Turned off by you.",
    )
    page = loaded(signed_in)

    notice = page.locator(f'#toasts [data-webhook="{broken.pk}"]')
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("https://hooks.example.com/videos")
    expect(notice).to_contain_text(FAILED_FOR_A_DAY)
    # Only the endpoint that failed is told about: one turned off by its owner is no news.
    expect(page.locator("#toasts .webhook-notice")).to_have_count(1)
    assert_covers_nothing(page, notice)
    shot(page, "webhooks-04-turned-off-notice-desktop")
    page.set_viewport_size(PHONE)
    assert_covers_nothing(page, notice)
    shot(page, "webhooks-04-turned-off-notice-phone")

    notice.get_by_role("button", name="Open Webhooks settings").click()
    expect(endpoint_row(page, broken).get_by_role("switch")).to_be_focused()
    expect(endpoint_row(page, broken).get_by_role("switch")).to_be_in_viewport()

    notice.get_by_role("button", name="Turn back on").click()
    wait_for(lambda: refreshed(broken).enabled, "the endpoint to be back on")
    assert broken.failing_since is None
    expect(notice).to_have_count(0)
    expect(endpoint_row(page, broken).get_by_role("switch")).to_be_checked()
    expect(page.locator("#toasts")).to_contain_text("Webhook endpoint back on")

    loaded(page)
    expect(page.locator("#toasts .webhook-notice")).to_have_count(0)


def assert_covers_nothing(page: Page, notice: Locator) -> None:
    """The notice is in the page's flow: the controls under it are where they are, and reachable."""
    box = notice.bounding_box()
    assert box is not None
    for control in (page.locator("#brief-title"), page.locator("#write-script-button")):
        other = control.bounding_box()
        assert other is not None
        apart = other["y"] >= box["y"] + box["height"] or other["y"] + other["height"] <= box["y"]
        assert apart, f"The notice {box} covers {control} at {other}"


def test_deliveries_are_listed_with_their_attempts_and_one_is_sent_again(
    signed_in: Page, alice: User, loopback_allowed: None
) -> None:
    with receiver() as hook:
        endpoint = make_endpoint(alice, hook.url, failing_since=timezone.now())
        failed = given_a_failed_delivery(endpoint)
        page = loaded(signed_in)
        row = endpoint_row(page, endpoint)
        expect(row).to_contain_text("Failing since")

        row.get_by_role("button", name=f"Deliveries to {hook.url}").click()
        item = row.locator(f'.delivery[data-id="{failed.pk}"]')
        expect(item).to_contain_text("job.completed")
        expect(item).to_contain_text("Failed")
        expect(item).to_contain_text("HTTP 500")
        expect(item).to_contain_text("1200 ms")
        expect(item).to_contain_text("Connection refused")
        expect(row.locator(".webhook-deliveries")).to_contain_text("1 message.")
        shot(page, "webhooks-05-deliveries")

        item.get_by_role("button", name="Send again").click()
        wait_for(
            lambda: refreshed(failed).state != DeliveryState.FAILED, "the message to be sent again"
        )
        # No worker runs here: the task waits in the broker, the message pending.
        assert failed.state in (DeliveryState.PENDING, DeliveryState.DELIVERED)
        again = row.locator(f'.delivery[data-id="{failed.pk}"]')
        expect(again).to_contain_text("Sending again now")


def given_a_failed_delivery(endpoint: Endpoint) -> Delivery:
    started = timezone.now() - timedelta(minutes=10)
    delivery = Delivery.objects.create(
        endpoint=endpoint,
        event_type="job.completed",
        body='{"type":"job.completed"}',
        state=DeliveryState.FAILED,
        attempts=2,
        created_at=started,
    )
    Attempt.objects.create(
        delivery=delivery, number=1, started_at=started, duration_ms=1200, status_code=500
    )
    Attempt.objects.create(
        delivery=delivery,
        number=2,
        started_at=started + timedelta(minutes=5),
        duration_ms=3,
        error="Connection refused",
    )
    return delivery


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_webhooks_section_fits_desktop_and_phone(
    signed_in: Page, alice: User, viewport: dict[str, int]
) -> None:
    page = signed_in
    page.set_viewport_size(viewport)
    endpoint = make_endpoint(
        alice,
        "https://hooks.example.com/a/rather/long/path/for/the/video/jobs?team=night-trains",
        description="Night trains team",
        failing_since=timezone.now() - timedelta(hours=3),
    )
    given_a_failed_delivery(endpoint)
    loaded(page)
    row = endpoint_row(page, endpoint)
    row.get_by_role("button", name="Deliveries to").click()
    expect(row.locator(".delivery")).to_have_count(1)
    open_add_form(page)

    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"The page scrolls sideways by {overflow} px"
    for control in (row.get_by_role("switch"), row.get_by_role("button", name="Send again")):
        control.scroll_into_view_if_needed()
        expect(control).to_be_in_viewport()
    size = "desktop" if viewport == DESKTOP else "phone"
    page.locator("#webhooks").scroll_into_view_if_needed()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#webhooks").screenshot(path=str(ARTIFACTS / f"webhooks-06-section-{size}.png"))
    shot(page, f"webhooks-07-page-{size}")
