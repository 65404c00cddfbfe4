"""The webhooks admin: endpoints and their messages to look at, and its buttons — never a secret."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from webhooks import outbox
from webhooks.admin import DELIVERY_LIST_URL_CHARS, RECENT_DELIVERIES
from webhooks.endpoints import TURNED_OFF_BY_OPERATOR
from webhooks.models import EVENT_TYPES, Attempt, Delivery, DeliveryState, Endpoint, new_secret

pytestmark = pytest.mark.django_db

ENDPOINTS = reverse("admin:webhooks_endpoint_changelist")
ADD_ENDPOINT = reverse("admin:webhooks_endpoint_add")
DELIVERIES = reverse("admin:webhooks_delivery_changelist")
# No spaces, nothing to break at: as long as an endpoint's URL may be.
LONG_URL = "https://hooks.example.com/" + "receive" * 280 + "/end"


@pytest.fixture
def staff(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_superuser("root", password="root-password-1")


@pytest.fixture
def admin_browser(staff: User) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def make_endpoint(alice: User) -> Callable[..., Endpoint]:
    def make(owner: User | None = None, **fields: Any) -> Endpoint:
        fields.setdefault("url", "https://hooks.example.com/videos")
        fields.setdefault("events", list(EVENT_TYPES))
        return Endpoint.objects.create(owner=owner or alice, **fields)

    return make


def make_delivery(endpoint: Endpoint, **fields: Any) -> Delivery:
    now = timezone.now()
    fields.setdefault("event_type", "job.completed")
    fields.setdefault("project_id", uuid.uuid4())
    fields.setdefault("next_attempt_at", now)
    data = {"id": str(fields["project_id"]), "status": "completed", "title": "Night trains"}
    body = outbox.message_body(fields["event_type"], data, now)
    return Delivery.objects.create(endpoint=endpoint, body=body, **fields)


def given_up(endpoint: Endpoint, attempts: int = 2) -> Delivery:
    """A message whose every attempt failed: the schedule ran out."""
    delivery = make_delivery(
        endpoint, state=DeliveryState.FAILED, attempts=attempts, next_attempt_at=None
    )
    for number in range(1, attempts + 1):
        Attempt.objects.create(
            delivery=delivery,
            number=number,
            started_at=timezone.now() - timedelta(minutes=10 - number),
            duration_ms=120 + number,
            status_code=503,
            error="The receiver answered 503 Service Unavailable",
            response_body=f"<h1>Down for maintenance {number}</h1>",
        )
    return delivery


def turned_off(endpoint: Endpoint, reason: str = "Turned off by you.") -> Endpoint:
    Endpoint.objects.filter(pk=endpoint.pk).update(
        disabled_at=timezone.now(),
        disabled_reason=reason,
        failing_since=timezone.now() - timedelta(days=1),
    )
    endpoint.refresh_from_db()
    return endpoint


def endpoint_url(name: str, endpoint: Endpoint) -> str:
    return reverse(f"admin:webhooks_endpoint_{name}", args=[endpoint.pk])


def delivery_url(name: str, delivery: Delivery) -> str:
    # Quoted as the admin's own links are (its ids hold `_`, the admin's escape character).
    return reverse(f"admin:webhooks_delivery_{name}", args=[quote(delivery.pk)])


def shown_messages(response: Any) -> list[tuple[str, str]]:
    return [(message.level_tag, message.message) for message in response.context["messages"]]


def history_of(thing: Endpoint | Delivery) -> list[tuple[int, str, str]]:
    entries = LogEntry.objects.filter(object_id=str(thing.pk)).order_by("pk")
    return [(e.action_flag, e.get_change_message(), e.user.get_username()) for e in entries]


def add_endpoint(client: Client, owner: User, url: str, **fields: Any) -> Any:
    form = {"owner": owner.pk, "url": url, "events": list(EVENT_TYPES), "description": ""}
    return client.post(ADD_ENDPOINT, form | fields)


# --- the endpoints list -----------------------------------------------------------------


def test_the_endpoint_list_wraps_a_long_url_inside_its_column(
    admin_browser: Client, make_endpoint: Any
) -> None:
    make_endpoint(url=LONG_URL, events=["job.failed"])

    response = admin_browser.get(ENDPOINTS)

    assert response.status_code == 200
    html = response.content.decode()
    assert f'<span class="webhook-url" title="{LONG_URL}">{LONG_URL[:299]}…</span>' in html
    assert "overflow-wrap: anywhere" in html
    assert "#result_list .field-list_url" in html
    row = html[html.index("webhook-url") :]
    assert "alice" in row
    assert "job.failed" in row
    assert '<span class="webhook-on">On</span>' in row


def test_the_endpoint_list_shows_why_an_endpoint_is_off_and_since_when_it_fails(
    admin_browser: Client, make_endpoint: Any
) -> None:
    turned_off(make_endpoint(), "Turned off: every delivery failed for a day.")

    html = admin_browser.get(ENDPOINTS).content.decode()

    assert '<span class="webhook-off">Off</span>' in html
    assert "Turned off: every delivery failed for a day." in html
    failing_since = re.search(r'<td class="field-failing_since[^"]*">([^<]*)</td>', html)
    assert failing_since is not None
    assert failing_since.group(1) not in ("", "-")


def test_the_endpoint_list_filters_by_state_and_owner_and_searches_url_and_owner(
    admin_browser: Client, make_endpoint: Any, charlie: User
) -> None:
    alices = make_endpoint(url="https://alice.example.com/hook")
    charlies = turned_off(make_endpoint(owner=charlie, url="https://charlie.example.net/in"))

    def listed(**query: Any) -> list[Endpoint]:
        return list(admin_browser.get(ENDPOINTS, query).context["cl"].result_list)

    assert listed(enabled="yes") == [alices]
    assert listed(enabled="no") == [charlies]
    assert listed(owner__id__exact=charlie.pk) == [charlies]
    assert listed(q="alice.example") == [alices]
    assert listed(q="charlie") == [charlies]


def test_the_endpoint_list_does_not_query_once_per_endpoint(
    admin_browser: Client, make_endpoint: Any, django_user_model: type[User]
) -> None:
    make_endpoint()
    with CaptureQueriesContext(connection) as one_endpoint:
        admin_browser.get(ENDPOINTS)
    for n in range(5):
        make_endpoint(owner=django_user_model.objects.create_user(f"owner-{n}"))

    with CaptureQueriesContext(connection) as six_endpoints:
        admin_browser.get(ENDPOINTS)

    assert len(six_endpoints) == len(one_endpoint)


# --- the secret ----------------------------------------------------------------------


def test_no_admin_page_shows_an_endpoints_secret_or_the_one_rotated_out(
    admin_browser: Client, make_endpoint: Any, alice: User, allow_loopback: None
) -> None:
    endpoint = make_endpoint(
        previous_secret=new_secret(),
        previous_secret_expires_at=timezone.now() + timedelta(hours=1),
    )
    delivery = given_up(endpoint)
    admin_browser.post(endpoint_url("turn_off", endpoint))
    admin_browser.post(endpoint_url("turn_on", endpoint))
    admin_browser.post(delivery_url("send_again", delivery))
    added = add_endpoint(admin_browser, alice, "http://127.0.0.1:9/hook", _continue="1")
    pages = [
        ENDPOINTS,
        ADD_ENDPOINT,
        endpoint_url("change", endpoint),
        endpoint_url("history", endpoint),
        DELIVERIES,
        delivery_url("change", delivery),
        delivery_url("history", delivery),
        reverse("admin:webhooks_endpoint_changelist") + "?q=example",
        reverse("admin:index"),
        reverse("admin:app_list", args=["webhooks"]),
        added.url,
    ]

    secrets = [endpoint.secret, endpoint.previous_secret]
    secrets += list(Endpoint.objects.exclude(pk=endpoint.pk).values_list("secret", flat=True))
    assert len(secrets) == 3
    for page in pages:
        response = admin_browser.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        assert "whsec_" not in html, page
        for secret in secrets:
            assert secret.removeprefix("whsec_") not in html, page


def test_the_endpoint_page_names_when_the_old_secret_stops_signing_but_not_the_secret(
    admin_browser: Client, make_endpoint: Any
) -> None:
    endpoint = make_endpoint(
        previous_secret=new_secret(),
        previous_secret_expires_at=timezone.now() + timedelta(hours=1),
    )

    html = admin_browser.get(endpoint_url("change", endpoint)).content.decode()

    assert "field-old_secret_until" in html
    assert "field-secret" not in html
    assert "field-previous_secret " not in html
    assert 'name="secret"' not in html


# --- adding an endpoint for a user ------------------------------------------------------------


@pytest.fixture
def allow_loopback(settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True


@pytest.fixture
def refuse_private(settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False


def test_the_add_form_offers_each_event_as_a_checkbox_all_ticked(admin_browser: Client) -> None:
    html = admin_browser.get(ADD_ENDPOINT).content.decode()

    for event in EVENT_TYPES:
        checkbox = re.search(rf'<input type="checkbox" name="events" value="{event}"[^>]*>', html)
        assert checkbox is not None, event
        assert "checked" in checkbox.group(0)
    assert 'name="secret"' not in html


def test_the_add_form_refuses_the_cloud_metadata_address(
    admin_browser: Client, alice: User, refuse_private: None
) -> None:
    response = add_endpoint(admin_browser, alice, "http://169.254.169.254/")

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["url"]
    assert "private, loopback or link-local address (169.254.169.254)" in errors["url"][0]
    assert not Endpoint.objects.exists()


def test_the_add_form_refuses_a_loopback_address_while_the_setting_is_off(
    admin_browser: Client, alice: User, refuse_private: None
) -> None:
    response = add_endpoint(admin_browser, alice, "http://127.0.0.1:8000/hook")

    assert "url" in response.context["adminform"].form.errors
    assert not Endpoint.objects.exists()


def test_the_add_form_makes_an_endpoint_for_a_user_without_showing_its_secret(
    admin_browser: Client, alice: User, staff: User, allow_loopback: None
) -> None:
    response = add_endpoint(
        admin_browser,
        alice,
        "  http://127.0.0.1:8000/hook  ",
        events=["job.failed", "job.completed"],
        description="Alice's render farm",
    )

    endpoint = Endpoint.objects.get()
    assert response.status_code == 302
    assert response.url == endpoint_url("change", endpoint)
    assert endpoint.owner == alice
    assert endpoint.url == "http://127.0.0.1:8000/hook"
    assert endpoint.events == ["job.completed", "job.failed"]
    assert endpoint.description == "Alice's render farm"
    assert endpoint.enabled
    assert endpoint.secret.startswith("whsec_")
    assert history_of(endpoint) == [(ADDITION, "Added.", "root")]
    page = admin_browser.get(response.url)
    ((level, message),) = shown_messages(page)
    assert level == "success"
    assert f"POST /api/video-creation/webhooks/{endpoint.pk}/rotate-secret" in message
    assert endpoint.secret not in page.content.decode()


def test_the_add_form_asks_for_at_least_one_event(
    admin_browser: Client, alice: User, allow_loopback: None
) -> None:
    response = add_endpoint(admin_browser, alice, "http://127.0.0.1:8000/hook", events=[])

    assert response.context["adminform"].form.errors["events"] == ["Choose at least one event."]
    assert not Endpoint.objects.exists()


def test_the_add_form_keeps_a_user_within_the_endpoint_limit(
    admin_browser: Client, alice: User, make_endpoint: Any, settings: Any, allow_loopback: None
) -> None:
    settings.WEBHOOK_MAX_ENDPOINTS = 1
    make_endpoint()

    response = add_endpoint(admin_browser, alice, "http://127.0.0.1:8000/hook")

    assert response.context["adminform"].form.errors["owner"] == [
        "alice has 1 endpoints already, the most a user may have."
    ]
    assert Endpoint.objects.count() == 1


# --- an endpoint's page and its buttons ----------------------------------------------------


def test_the_endpoint_page_lists_its_newest_deliveries_and_links_to_all(
    admin_browser: Client, make_endpoint: Any
) -> None:
    endpoint = make_endpoint()
    oldest = given_up(endpoint)
    for _ in range(RECENT_DELIVERIES):
        newest = make_delivery(endpoint, event_type="job.progress")

    html = admin_browser.get(endpoint_url("change", endpoint)).content.decode()

    total = RECENT_DELIVERIES + 1
    assert f"The newest {RECENT_DELIVERIES} of {total} messages." in html
    assert f'href="{DELIVERIES}?endpoint__id__exact={endpoint.pk}"' in html
    assert f'<a href="{delivery_url("change", newest)}">{newest.pk}</a>' in html
    assert oldest.pk not in html
    all_of_them = admin_browser.get(DELIVERIES, {"endpoint__id__exact": endpoint.pk})
    assert len(all_of_them.context["cl"].result_list) == total


def test_the_delivery_table_shows_type_state_attempts_and_next_attempt(
    admin_browser: Client, make_endpoint: Any
) -> None:
    endpoint = make_endpoint()
    next_attempt = timezone.now() + timedelta(minutes=5)
    make_delivery(endpoint, event_type="job.started", attempts=1, next_attempt_at=next_attempt)

    html = admin_browser.get(endpoint_url("change", endpoint)).content.decode()

    table = html[html.index('<table class="webhook-table webhook-deliveries">') :]
    row = re.findall(r"<td[^>]*>(.*?)</td>", table[: table.index("</tr>", table.index("<tbody>"))])
    assert row[1:4] == ["job.started", "pending", "1"]
    assert timezone.localtime(next_attempt).strftime("%Y-%m-%d %H:%M:%S") in row[4]


def test_turning_an_endpoint_off_gives_up_its_waiting_messages_and_is_recorded(
    admin_browser: Client, make_endpoint: Any
) -> None:
    endpoint = make_endpoint()
    waiting = make_delivery(endpoint)
    page = admin_browser.get(endpoint_url("change", endpoint)).content.decode()
    assert f'action="{endpoint_url("turn_off", endpoint)}"' in page

    response = admin_browser.post(endpoint_url("turn_off", endpoint), follow=True)

    endpoint.refresh_from_db()
    waiting.refresh_from_db()
    assert response.redirect_chain == [(endpoint_url("change", endpoint), 302)]
    assert endpoint.disabled_at is not None
    assert endpoint.disabled_reason == TURNED_OFF_BY_OPERATOR
    assert waiting.state == DeliveryState.FAILED
    assert waiting.next_attempt_at is None
    assert history_of(endpoint) == [(CHANGE, "Turned off.", "root")]
    ((level, message),) = shown_messages(response)
    assert level == "success"
    assert "1 waiting message will not be sent" in message
    html = response.content.decode()
    assert f'action="{endpoint_url("turn_on", endpoint)}"' in html
    assert TURNED_OFF_BY_OPERATOR in html


def test_turning_an_endpoint_back_on_clears_the_reason_and_the_failures(
    admin_browser: Client, make_endpoint: Any
) -> None:
    endpoint = turned_off(make_endpoint(), "Turned off: every delivery failed for a day.")

    response = admin_browser.post(endpoint_url("turn_on", endpoint), follow=True)

    endpoint.refresh_from_db()
    assert endpoint.disabled_at is None
    assert endpoint.disabled_reason == ""
    assert endpoint.failing_since is None
    assert history_of(endpoint) == [(CHANGE, "Turned back on.", "root")]
    assert shown_messages(response)[0][0] == "success"
    assert f'action="{endpoint_url("turn_off", endpoint)}"' in response.content.decode()


def test_turning_off_an_endpoint_already_off_changes_and_records_nothing(
    admin_browser: Client, make_endpoint: Any
) -> None:
    endpoint = turned_off(make_endpoint(), "Turned off by you.")
    before = endpoint.disabled_at

    response = admin_browser.post(endpoint_url("turn_off", endpoint), follow=True)

    endpoint.refresh_from_db()
    assert endpoint.disabled_at == before
    assert endpoint.disabled_reason == "Turned off by you."
    assert history_of(endpoint) == []
    assert shown_messages(response) == [
        ("info", f"The endpoint {endpoint.url} was already turned off.")
    ]


def test_the_buttons_answer_only_a_post(admin_browser: Client, make_endpoint: Any) -> None:
    endpoint = make_endpoint()

    assert admin_browser.get(endpoint_url("turn_off", endpoint)).status_code == 405
    endpoint.refresh_from_db()
    assert endpoint.enabled


def test_an_endpoint_cannot_be_edited_or_deleted_in_the_admin(
    admin_browser: Client, make_endpoint: Any
) -> None:
    endpoint = make_endpoint()

    refused = admin_browser.post(
        endpoint_url("change", endpoint), {"url": "https://elsewhere.example.com/"}
    )
    deleting = admin_browser.get(endpoint_url("delete", endpoint))

    assert refused.status_code == 403
    assert deleting.status_code == 403
    endpoint.refresh_from_db()
    assert endpoint.url == "https://hooks.example.com/videos"


# --- the deliveries -----------------------------------------------------------------------------


def test_the_delivery_list_shows_each_message_with_its_endpoints_long_url(
    admin_browser: Client, make_endpoint: Any
) -> None:
    delivery = given_up(make_endpoint(url=LONG_URL), attempts=3)

    response = admin_browser.get(DELIVERIES)

    assert response.status_code == 200
    html = response.content.decode()
    cut = LONG_URL[: DELIVERY_LIST_URL_CHARS - 1]
    assert f'<span class="webhook-url" title="{LONG_URL}">{cut}…</span>' in html
    assert "#result_list .field-endpoint_url" in html
    assert delivery.pk in html
    assert str(delivery.project_id) in html
    assert '<td class="field-attempts">3</td>' in html
    assert 'class="delivery-failed"' in html


def test_the_delivery_list_filters_by_state_and_type_and_finds_a_message_by_id(
    admin_browser: Client, make_endpoint: Any
) -> None:
    endpoint = make_endpoint()
    failed = given_up(endpoint)
    progress = make_delivery(endpoint, event_type="job.progress")

    def listed(**query: Any) -> list[Delivery]:
        return list(admin_browser.get(DELIVERIES, query).context["cl"].result_list)

    assert listed(state="failed") == [failed]
    assert listed(state="pending") == [progress]
    assert listed(event_type="job.progress") == [progress]
    assert listed(q=failed.pk) == [failed]


def test_the_delivery_list_does_not_query_once_per_message(
    admin_browser: Client, make_endpoint: Any, charlie: User
) -> None:
    make_delivery(make_endpoint())
    with CaptureQueriesContext(connection) as one_message:
        admin_browser.get(DELIVERIES)
    for _ in range(5):
        make_delivery(make_endpoint(owner=charlie))

    with CaptureQueriesContext(connection) as six_messages:
        admin_browser.get(DELIVERIES)

    assert len(six_messages) == len(one_message)


def test_the_delivery_page_shows_the_body_pretty_printed_and_every_attempt(
    admin_browser: Client, make_endpoint: Any
) -> None:
    delivery = given_up(make_endpoint())
    Attempt.objects.filter(delivery=delivery, number=2).update(by_hand=True)

    html = admin_browser.get(delivery_url("change", delivery)).content.decode()

    assert '<pre class="webhook-body">{\n  &quot;type&quot;: &quot;job.completed&quot;,' in html
    assert "&quot;title&quot;: &quot;Night trains&quot;" in html
    table = html[html.index('<table class="webhook-table webhook-attempts">') :]
    rows = re.findall(r"<tr>(.*?)</tr>", table[: table.index("</table>")], re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows[1:]]
    assert [row[0] for row in cells] == ["1", "2"]
    assert [row[2:5] for row in cells] == [
        ["121", "503", "The receiver answered 503 Service Unavailable"],
        ["122", "503", "The receiver answered 503 Service Unavailable"],
    ]
    assert cells[0][5] == "<pre>&lt;h1&gt;Down for maintenance 1&lt;/h1&gt;</pre>"
    assert [row[6] for row in cells] == ["no", "yes"]
    assert f'href="{endpoint_url("change", delivery.endpoint)}"' in html


def test_send_again_makes_a_failed_delivery_pending_and_is_recorded(
    admin_browser: Client, make_endpoint: Any, django_capture_on_commit_callbacks: Any
) -> None:
    delivery = given_up(make_endpoint())
    page = admin_browser.get(delivery_url("change", delivery)).content.decode()
    assert f'action="{delivery_url("send_again", delivery)}"' in page
    before = timezone.now()

    with django_capture_on_commit_callbacks() as queued:
        response = admin_browser.post(delivery_url("send_again", delivery), follow=True)

    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.PENDING
    assert delivery.next_attempt_at is not None
    assert before <= delivery.next_attempt_at <= timezone.now()
    assert len(queued) == 1  # the task for the attempt, once the resend commits
    assert history_of(delivery) == [(CHANGE, "Sent again by hand.", "root")]
    assert response.redirect_chain == [(delivery_url("change", delivery), 302)]
    assert shown_messages(response)[0][0] == "success"


def test_send_again_is_refused_while_the_endpoint_is_off(
    admin_browser: Client, make_endpoint: Any, django_capture_on_commit_callbacks: Any
) -> None:
    delivery = given_up(make_endpoint())
    turned_off(delivery.endpoint)
    page = admin_browser.get(delivery_url("change", delivery)).content.decode()

    with django_capture_on_commit_callbacks() as queued:
        response = admin_browser.post(delivery_url("send_again", delivery), follow=True)

    assert "send-again" not in page
    assert "Its endpoint is turned off" in page
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.FAILED
    assert delivery.next_attempt_at is None
    assert queued == []
    assert history_of(delivery) == []
    assert shown_messages(response) == [
        (
            "warning",
            f"{delivery.pk} was not sent: Its endpoint is turned off: "
            "turn the endpoint back on before sending to it again.",
        )
    ]


def test_the_send_again_action_resends_each_message_of_an_endpoint_that_is_on(
    admin_browser: Client, make_endpoint: Any, charlie: User
) -> None:
    on = given_up(make_endpoint())
    off = given_up(turned_off(make_endpoint(owner=charlie)))

    response = admin_browser.post(
        DELIVERIES,
        {"action": "send_again", "index": "0", "_selected_action": [on.pk, off.pk]},
        follow=True,
    )

    on.refresh_from_db()
    off.refresh_from_db()
    assert on.state == DeliveryState.PENDING
    assert off.state == DeliveryState.FAILED
    assert history_of(on) == [(CHANGE, "Sent again by hand.", "root")]
    assert history_of(off) == []
    levels = [level for level, _ in shown_messages(response)]
    assert levels == ["warning", "success"]
    assert shown_messages(response)[1][1] == "1 message is being sent again."


def test_a_message_whose_id_reads_as_an_admin_escape_still_has_working_links(
    admin_browser: Client, make_endpoint: Any
) -> None:
    # The admin's `unquote` reads `_22` as `"`: every link to a message must be quoted.
    delivery = make_delivery(
        make_endpoint(), id="msg_22" + "0" * 30, state=DeliveryState.FAILED, next_attempt_at=None
    )

    endpoint_page = admin_browser.get(endpoint_url("change", delivery.endpoint)).content.decode()
    link = re.search(r'<td class="message-id"><a href="([^"]+)">', endpoint_page)
    sent = admin_browser.post(delivery_url("send_again", delivery), follow=True)

    assert link is not None
    assert admin_browser.get(link.group(1)).status_code == 200
    assert sent.redirect_chain == [(delivery_url("change", delivery), 302)]
    assert sent.status_code == 200
    assert Delivery.objects.get(pk=delivery.pk).state == DeliveryState.PENDING


def test_deliveries_and_attempts_cannot_be_added_edited_or_deleted_by_hand(
    admin_browser: Client, make_endpoint: Any
) -> None:
    delivery = given_up(make_endpoint())

    page = admin_browser.get(delivery_url("change", delivery)).content.decode()
    editing = admin_browser.post(delivery_url("change", delivery), {"state": "delivered"})
    adding = admin_browser.get(reverse("admin:webhooks_delivery_add"))
    deleting = admin_browser.get(delivery_url("delete", delivery))

    assert 'name="body"' not in page
    assert 'name="state"' not in page
    assert editing.status_code == 403
    assert adding.status_code == 403
    assert deleting.status_code == 403
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.FAILED
    with pytest.raises(NoReverseMatch):
        reverse("admin:webhooks_attempt_changelist")


# --- who may --------------------------------------------------------------------------------


def test_a_user_who_is_not_staff_is_sent_to_sign_in_and_changes_nothing(
    alice: User, make_endpoint: Any
) -> None:
    endpoint = make_endpoint()
    delivery = given_up(endpoint)
    browser = Client()
    browser.force_login(alice)

    pages = [ENDPOINTS, ADD_ENDPOINT, endpoint_url("change", endpoint), DELIVERIES]
    pages += [delivery_url("change", delivery)]
    for page in pages:
        response = browser.get(page)
        assert response.status_code == 302, page
        assert response.url.startswith(reverse("admin:login")), page
    for button in [endpoint_url("turn_off", endpoint), delivery_url("send_again", delivery)]:
        assert browser.post(button).status_code == 302, button

    endpoint.refresh_from_db()
    delivery.refresh_from_db()
    assert endpoint.enabled
    assert delivery.state == DeliveryState.FAILED
    assert not LogEntry.objects.exists()


def test_staff_who_may_only_look_see_no_buttons_and_cannot_press_them(
    django_user_model: type[User], make_endpoint: Any
) -> None:
    looker = django_user_model.objects.create_user("looker", is_staff=True)
    looker.user_permissions.set(
        Permission.objects.filter(codename__in=["view_endpoint", "view_delivery"])
    )
    endpoint = make_endpoint()
    delivery = given_up(endpoint)
    browser = Client()
    browser.force_login(looker)

    endpoint_page = browser.get(endpoint_url("change", endpoint))
    delivery_page = browser.get(delivery_url("change", delivery))

    assert endpoint_page.status_code == delivery_page.status_code == 200
    assert "turn-off" not in endpoint_page.content.decode()
    assert "send-again" not in delivery_page.content.decode()
    assert browser.get(ADD_ENDPOINT).status_code == 403
    assert browser.post(endpoint_url("turn_off", endpoint)).status_code == 403
    assert browser.post(delivery_url("send_again", delivery)).status_code == 403
    endpoint.refresh_from_db()
    assert endpoint.enabled
    assert not LogEntry.objects.exists()
