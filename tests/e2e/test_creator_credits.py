"""Credits on the creator page: the balance in the header, the buttons' prices, a refused start."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from credits import ledger
from projects.models import Status, VideoProject
from tests.e2e.conftest import shot
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def open_the_draft(page: Page) -> None:
    page.reload()
    page.get_by_role("dialog").get_by_role("button", name="Continue").click()
    expect(page.locator("#review")).to_be_visible()


def test_a_new_brief_shows_the_balance_and_the_script_price(signed_in: Page) -> None:
    page = signed_in

    expect(page.locator("#credits-balance")).to_have_text("100 credits")
    expect(page.locator("#write-script-button")).to_have_text("Write the script · 1 credit")


def test_the_render_price_follows_the_script_and_the_balance_follows_the_job(
    signed_in: Page, scripted_project: VideoProject
) -> None:
    page = signed_in
    open_the_draft(page)
    render = page.locator("#render-button")
    expect(render).to_have_text("Render video · 4 credits")  # two scenes of 2 s
    expect(page.locator("#rewrite-button")).to_have_text("Rewrite the script · 1 credit")

    page.locator("#scenes .scene").nth(1).locator("[name=seconds]").fill("5")
    expect(render).to_have_text("Render video · 7 credits")
    shot(page, "credits-01-render-price")
    render.click()  # saves the script, then starts the render (no worker: it stays queued)

    expect(page.locator("#job-panel")).to_be_visible()
    expect(page.locator("#credits-balance")).to_have_text("93 credits")
    assert VideoProject.objects.get(pk=scripted_project.pk).charged == 7

    page.get_by_role("button", name="Cancel").click()

    expect(page.locator("#credits-balance")).to_have_text("100 credits")
    expect(page.locator("#render-button")).to_have_text("Render video · 7 credits")


def test_a_start_the_balance_cannot_pay_for_says_what_it_costs(
    signed_in: Page, alice: Any, scripted_project: VideoProject
) -> None:
    page = signed_in
    ledger.grant(alice.pk, -97, "down to 3")
    open_the_draft(page)
    expect(page.locator("#credits-balance")).to_have_text("3 credits")

    page.locator("#render-button").click()

    expect(page.locator("#review [role=alert]")).to_have_text(
        "Rendering this video costs 4 credits; you have 3."
    )
    expect(page.locator("#review")).to_be_visible()
    shot(page, "credits-02-refused")
    wait_for(lambda: page.locator("#render-button").is_enabled(), "the button to be free again")
    assert VideoProject.objects.get(pk=scripted_project.pk).status == Status.DRAFT
    assert ledger.balance_of(alice.pk) == 3
