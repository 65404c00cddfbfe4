"""The operator page in a browser: it draws its charts with nothing from outside the server
(it works offline), and fits a laptop's screen and a phone's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, Route, expect

from projects.models import VideoProject
from tests.e2e.conftest import PHONE, shot
from tests.test_operator_page import a_busy_day

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def operator(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("olga", password="olga-password-1", is_staff=True)


def test_the_operator_page_draws_every_chart_offline(
    page: Page, live_server: Any, operator: User, make_project: Callable[..., VideoProject]
) -> None:
    day = a_busy_day(make_project)
    elsewhere: list[str] = []

    def only_this_server(route: Route) -> None:
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:  # offline: nothing else answers
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto("/admin/")
    page.get_by_label("Username").fill("olga")
    page.get_by_label("Password").fill("olga-password-1")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Operator page").click()

    expect(page.get_by_role("heading", name="Queue length")).to_be_visible()
    for chart in ("Queue length", "Throughput", "Job durations", "Failures"):
        svg = page.get_by_role("img", name=chart)
        expect(svg).to_be_visible()
        label = svg.locator("text").first.bounding_box()
        assert label and label["height"] >= 10, f"the labels of {chart} are big enough to read"
    failure_bar = page.locator("#failures-chart rect.failed")
    expect(failure_bar).to_have_count(1)
    bar = failure_bar.bounding_box()
    assert bar and bar["height"] > 20
    page.get_by_text("The numbers, hour by hour").first.click()
    expect(page.locator("#queue-table")).to_contain_text(day.label)
    shot(page, "operator-page")
    assert elsewhere == []

    page.set_viewport_size(PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, f"the page scrolls sideways on a phone: {width} px"
    shot(page, "operator-page-phone")
