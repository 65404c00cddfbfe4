"""Webhooks: endpoints, the outbox, signed deliveries, retries on a schedule, the address guard."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from projects import lifecycle, progress
from projects.api.serializers import PLAIN_MESSAGES
from projects.models import Status, Step, VideoProject
from tests.receiver import HANG, Receiver, receiver, register
from webhooks import api as webhooks_api
from webhooks import outbox, sending
from webhooks.addresses import RefusedAddress, check_url, connection_for
from webhooks.models import Attempt, Delivery, DeliveryState, Endpoint

WEBHOOKS = "/api/video-creation/webhooks"
WORKER = "worker-1"


@pytest.fixture
def allow_loopback(settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True


@pytest.fixture
def hooks(allow_loopback: None) -> Iterator[Receiver]:
    with receiver() as listening:
        yield listening


def readme_receiver() -> Callable[[str, bytes, dict[str, str]], Any]:
    """The README's receiver snippet, run as a reader would paste it."""
    readme = (Path(django_settings.BASE_DIR) / "README.md").read_text()
    block = re.search(r"<!-- receiver-snippet -->\n```python\n(.*?)```", readme, re.S)
    assert block is not None, "the README shows how a receiver verifies a delivery"
    scope: dict[str, Any] = {}
    exec(block.group(1), scope)  # the README's own code, on purpose
    return scope["verified_message"]


def claimed(project: VideoProject) -> VideoProject:
    lifecycle.start_job(project, Step.RENDER if project.script_data else Step.SCRIPT)
    taken = lifecycle.claim(
        project.pk, Step.SCRIPT if not project.script_data else Step.RENDER, WORKER
    )
    assert taken is not None
    return taken


def deliver_all(now: datetime | None = None) -> list[Attempt]:
    due = Delivery.objects.filter(state=DeliveryState.PENDING).order_by("created_at")
    attempts = [sending.deliver(pk, now) for pk in due.values_list("pk", flat=True)]
    return [attempt for attempt in attempts if attempt is not None]


# --- endpoints ------------------------------------------------------------------------


def test_it_shows_the_secret_once_when_the_endpoint_is_made(
    alice_api: APIClient, hooks: Receiver
) -> None:
    made = register(alice_api, hooks.url, ["job.completed"])
    assert made["secret"].startswith("whsec_")
    assert made["events"] == ["job.completed"]
    shown = alice_api.get(f"{WEBHOOKS}/{made['id']}").json()
    assert "secret" not in shown
    assert shown["url"] == hooks.url
    assert made["secret"] not in json.dumps(alice_api.get(WEBHOOKS).json())


def test_an_endpoint_hears_every_event_unless_it_names_some(
    alice_api: APIClient, hooks: Receiver
) -> None:
    made = register(alice_api, hooks.url)
    assert made["events"] == [
        "job.started",
        "job.progress",
        "job.completed",
        "job.failed",
        "job.cancelled",
    ]


@pytest.mark.parametrize(
    ("body", "field", "sentence"),
    [
        ({"url": "ftp://example.com/x"}, "url", "Use an http:// or https:// address."),
        ({"url": ""}, "url", "The address must be an http:// or https:// URL"),
        ({"url": "http://127.0.0.1:9/", "events": ["job.done"]}, "events", "Events must be"),
        ({"url": "http://127.0.0.1:9/", "events": "job.started"}, "events", "Events must be"),
        ({"url": "http://127.0.0.1:9/", "events": []}, "events", "Events must be"),
        ({"url": "http://127.0.0.1:9/", "secret": "whsec_mine"}, "secret", "not accepted"),
    ],
)
def test_it_refuses_bad_input_with_a_sentence_and_saves_nothing(
    alice_api: APIClient, allow_loopback: None, body: dict[str, Any], field: str, sentence: str
) -> None:
    answer = alice_api.post(WEBHOOKS, body, format="json")
    assert answer.status_code == 400
    assert sentence in answer.json()["fields"][field][0]
    assert not Endpoint.objects.exists()


def test_another_users_endpoint_is_not_there(
    alice_api: APIClient, charlie_api: APIClient, hooks: Receiver
) -> None:
    made = register(alice_api, hooks.url)
    mine = f"{WEBHOOKS}/{made['id']}"
    assert charlie_api.get(mine).status_code == 404
    assert charlie_api.patch(mine, {"enabled": False}, format="json").status_code == 404
    assert charlie_api.delete(mine).status_code == 404
    assert charlie_api.get(f"{mine}/deliveries").status_code == 404
    assert charlie_api.post(f"{mine}/rotate-secret").status_code == 404
    assert charlie_api.get(WEBHOOKS).json() == []
    assert Endpoint.objects.get().enabled


def test_the_owner_edits_turns_off_and_deletes_an_endpoint(
    alice_api: APIClient, hooks: Receiver
) -> None:
    made = register(alice_api, hooks.url)
    mine = f"{WEBHOOKS}/{made['id']}"
    edited = alice_api.patch(mine, {"events": ["job.failed"], "enabled": False}, format="json")
    assert edited.status_code == 200
    assert edited.json()["events"] == ["job.failed"]
    assert edited.json()["enabled"] is False
    assert edited.json()["disabledReason"] == "Turned off by you."
    back = alice_api.patch(mine, {"enabled": True}, format="json").json()
    assert back["enabled"] is True and back["disabledReason"] == ""
    assert alice_api.delete(mine).status_code == 204
    assert alice_api.get(mine).status_code == 404


def test_a_user_keeps_at_most_the_allowed_endpoints(
    alice_api: APIClient, hooks: Receiver, settings: Any
) -> None:
    settings.WEBHOOK_MAX_ENDPOINTS = 2
    register(alice_api, hooks.url)
    register(alice_api, hooks.url)
    answer = alice_api.post(WEBHOOKS, {"url": hooks.url}, format="json")
    assert answer.status_code == 400
    assert "delete one" in answer.json()["detail"]
    assert Endpoint.objects.count() == 2


# --- the address guard ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hooks",
        "http://localhost/hooks",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/hooks",
        "http://192.168.1.20/hooks",
        "http://172.16.0.1/hooks",
        "http://[::1]/hooks",
        "http://[fe80::1]/hooks",
        "http://[::ffff:127.0.0.1]/hooks",
        "http://0.0.0.0/hooks",
        "http://100.64.0.1/hooks",
    ],
)
def test_it_refuses_private_loopback_and_link_local_targets_when_saved(
    alice_api: APIClient, settings: Any, url: str
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    answer = alice_api.post(WEBHOOKS, {"url": url}, format="json")
    assert answer.status_code == 400
    assert "public addresses only" in answer.json()["detail"]
    assert not Endpoint.objects.exists()


def test_it_checks_the_address_again_when_each_delivery_connects(
    alice: Any, hooks: Receiver, settings: Any, make_project: Any
) -> None:
    """Saved while allowed (as a name whose DNS later changes would be): refused at connect."""
    endpoint = Endpoint.objects.create(owner=alice, url=hooks.url, events=["job.started"])
    lifecycle.start_job(make_project(), Step.SCRIPT)
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    (attempt,) = deliver_all()
    assert attempt.status_code is None
    assert "public addresses only" in attempt.error
    assert hooks.received == []
    assert endpoint.deliveries.get().state == DeliveryState.PENDING  # tried again later


def test_a_name_resolving_to_a_private_address_is_refused_at_connect(settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    connection = connection_for("http://localhost:9/hooks", timeout=1)
    with pytest.raises(RefusedAddress):
        connection.connect()


def test_a_name_that_does_not_resolve_is_refused_when_saved(settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    with pytest.raises(RefusedAddress, match="could not be found"):
        check_url("http://no-such-host.invalid/hooks")


# --- the outbox ------------------------------------------------------------------------


def test_a_job_that_starts_queues_its_message_in_the_same_transaction(
    alice: Any, hooks: Receiver, make_project: Any
) -> None:
    Endpoint.objects.create(owner=alice, url=hooks.url, events=["job.started"])
    project = make_project()
    with pytest.raises(RuntimeError), transaction.atomic():
        lifecycle.start_job(project, Step.SCRIPT)
        raise RuntimeError("the request failed after the start")
    assert not Delivery.objects.exists(), "a rolled-back start tells nobody"
    lifecycle.start_job(project, Step.SCRIPT)
    (delivery,) = Delivery.objects.all()
    assert (delivery.event_type, delivery.project_id) == ("job.started", project.pk)


def test_each_ending_is_told_with_the_status_object_and_which_job_it_was(
    alice: Any, hooks: Receiver, make_project: Any, scripted_project: VideoProject
) -> None:
    Endpoint.objects.create(
        owner=alice, url=hooks.url, events=["job.completed", "job.failed", "job.cancelled"]
    )
    script = make_project()
    claimed(script)
    lifecycle.finish_script(script.pk, WORKER, {"title": "t", "scenes": []})
    render = claimed(scripted_project)
    lifecycle.fail(render.pk, WORKER, "engine_error", "The engine broke.")
    lifecycle.cancel(claimed(make_project()))
    told = {
        (body["type"], body["data"]["currentStep"], body["data"]["status"])
        for body in (json.loads(d.body) for d in Delivery.objects.all())
    }
    assert told == {
        ("job.completed", "script", Status.DRAFT),
        ("job.failed", "render", Status.FAILED),
        ("job.cancelled", "script", Status.DRAFT),
    }


def test_progress_is_told_at_most_once_per_endpoint_per_interval(
    alice: Any, hooks: Receiver, make_project: Any, settings: Any
) -> None:
    settings.WEBHOOK_PROGRESS_SECONDS = 3600
    settings.PROGRESS_MIN_INTERVAL = 0
    Endpoint.objects.create(owner=alice, url=hooks.url, events=["job.progress"])
    first, second = claimed(make_project()), claimed(make_project())
    for project in (first, second, first):
        reporter = progress.Reporter(
            project.pk,
            step=Step.SCRIPT,
            lease_owner=WORKER,
            stages=[progress.Stage("write", "Writing", 1.0)],
            deadline=float("inf"),
        )
        reporter.begin(0)
        reporter.update(0.5)
        reporter.flush()
    (delivery,) = Delivery.objects.all()
    assert delivery.event_type == "job.progress"
    assert json.loads(delivery.body)["data"]["progressMessage"] == "Writing"


# --- deliveries ------------------------------------------------------------------------


def test_a_delivery_verifies_with_the_readme_snippet(
    alice_api: APIClient, hooks: Receiver, make_project: Any
) -> None:
    secret = register(alice_api, hooks.url, ["job.started"])["secret"]
    project = make_project()
    lifecycle.start_job(project, Step.SCRIPT)
    deliver_all()
    (request,) = hooks.wait_for(1)
    message = readme_receiver()(secret, request.body, request.headers)
    assert message["type"] == "job.started"
    assert message["data"]["id"] == str(project.pk)
    assert message["data"]["status"] == Status.GENERATING_SCRIPT
    assert message["data"]["currentStep"] == "script"
    assert request.headers["content-type"] == "application/json"
    assert request.path == "/hooks/videos"
    forged = request.body.replace(b"GENERATING_SCRIPT", b"COMPLETED")
    with pytest.raises(WebhookVerificationError):
        readme_receiver()(secret, forged, request.headers)


def test_a_receiver_failing_twice_gets_the_same_message_three_times(
    alice: Any, allow_loopback: None, make_project: Any
) -> None:
    with receiver([500, 500]) as hooks:
        Endpoint.objects.create(owner=alice, url=hooks.url, events=["job.started"])
        lifecycle.start_job(make_project(), Step.SCRIPT)
        delivery = Delivery.objects.get()
        start = timezone.now()
        for seconds in (0, 5, 305):  # the first attempt, then the schedule's 5 s and 5 min
            assert sending.deliver(delivery.pk, start + timedelta(seconds=seconds)) is not None
        received = hooks.wait_for(3)
    assert {request.headers["webhook-id"] for request in received} == {delivery.pk}
    assert len({request.body for request in received}) == 1
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.DELIVERED
    assert [a.status_code for a in delivery.attempt_set.all()] == [500, 500, 200]
    assert delivery.endpoint.failing_since is None


def test_a_receiver_that_never_answers_is_retried_on_the_schedule(
    alice: Any, allow_loopback: None, make_project: Any, settings: Any
) -> None:
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    settings.WEBHOOK_RETRY_SCHEDULE = [5, 300, 1800]
    with receiver([HANG, HANG, HANG, HANG]) as hooks:
        Endpoint.objects.create(owner=alice, url=hooks.url, events=["job.started"])
        lifecycle.start_job(make_project(), Step.SCRIPT)
        delivery = Delivery.objects.get()
        clock = timezone.now()
        tried_at = []
        for _ in range(4):
            attempt = sending.deliver(delivery.pk, clock)
            assert attempt is not None
            assert attempt.error == "No answer within 0.3 s"
            assert attempt.duration_ms < 2000
            tried_at.append(clock)
            delivery.refresh_from_db()
            if delivery.next_attempt_at is None:
                break
            # Not a moment before the schedule says.
            early = delivery.next_attempt_at - timedelta(milliseconds=1)
            assert sending.deliver(delivery.pk, early) is None
            assert outbox.relay(early) == 0
            clock = delivery.next_attempt_at
        hooks.wait_for(4)
    waits = [(later - earlier).total_seconds() for earlier, later in pairwise(tried_at)]
    assert waits == [5, 300, 1800]
    assert delivery.state == DeliveryState.FAILED
    assert delivery.attempts == 4


def test_an_endpoint_failing_for_a_day_is_turned_off(
    alice: Any, allow_loopback: None, make_project: Any, settings: Any
) -> None:
    settings.WEBHOOK_RETRY_SCHEDULE = [3600] * 30
    with receiver([503] * 30) as hooks:
        endpoint = Endpoint.objects.create(owner=alice, url=hooks.url, events=["job.started"])
        lifecycle.start_job(make_project(), Step.SCRIPT)
        lifecycle.start_job(make_project(), Step.SCRIPT)
        first, waiting = Delivery.objects.order_by("created_at")
        start = timezone.now()
        for hours in range(25):
            sending.deliver(first.pk, start + timedelta(hours=hours))
            endpoint.refresh_from_db()
            if not endpoint.enabled:
                break
    assert hours == 24, "turned off after a day of failures, not before"
    assert "failed for a day" in endpoint.disabled_reason
    waiting.refresh_from_db()
    assert waiting.state == DeliveryState.FAILED, "nothing more is sent to it"
    assert Endpoint.objects.listening(alice.pk, "job.started") == []


def test_a_message_is_told_once_however_many_tasks_carry_it(
    alice: Any, hooks: Receiver, make_project: Any
) -> None:
    Endpoint.objects.create(owner=alice, url=hooks.url, events=["job.started"])
    lifecycle.start_job(make_project(), Step.SCRIPT)
    delivery = Delivery.objects.get()
    assert sending.deliver(delivery.pk) is not None
    assert sending.deliver(delivery.pk) is None  # a second task (a redelivery) steps aside
    assert len(hooks.wait_for(1)) == 1


def test_a_lost_task_is_sent_again_by_the_relay(
    alice: Any, hooks: Receiver, make_project: Any, settings: Any
) -> None:
    Endpoint.objects.create(owner=alice, url=hooks.url, events=["job.started"])
    lifecycle.start_job(make_project(), Step.SCRIPT)
    delivery = Delivery.objects.get()
    now = timezone.now()
    assert outbox.send(delivery.pk, now) is True
    assert outbox.relay(now) == 0, "held by a broker"
    later = now + timedelta(seconds=settings.WEBHOOK_TASK_LOST_SECONDS + 1)
    assert outbox.relay(later) == 1, "not attempted for long: sent again"


def test_only_the_start_of_a_big_answer_is_read(
    alice: Any, allow_loopback: None, make_project: Any, settings: Any
) -> None:
    settings.WEBHOOK_RESPONSE_LIMIT = 100
    with big_answer_server() as url:
        Endpoint.objects.create(owner=alice, url=url, events=["job.started"])
        lifecycle.start_job(make_project(), Step.SCRIPT)
        (attempt,) = deliver_all()
    assert attempt.status_code == 200
    assert len(attempt.response_body) == 100


class big_answer_server:
    """Answers 200 with a body of 50 MB, sent as fast as the socket takes it."""

    def __enter__(self) -> str:
        import threading

        self.server = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()

        def serve() -> None:
            self.server.settimeout(0.2)
            while not self.stop.is_set():
                try:
                    client, _ = self.server.accept()
                except OSError:
                    continue
                with client:
                    client.recv(65536)
                    client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n")
                    try:
                        for _ in range(500):
                            client.sendall(b"x" * 100_000)
                    except OSError:
                        pass  # the sender hung up once it had read enough

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.getsockname()[1]}/hooks"

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.server.close()


# --- secrets, the record, resending ----------------------------------------------------


def test_after_a_rotation_both_secrets_verify_for_the_grace_period(
    alice_api: APIClient, hooks: Receiver, make_project: Any
) -> None:
    made = register(alice_api, hooks.url, ["job.started"])
    rotated = alice_api.post(f"{WEBHOOKS}/{made['id']}/rotate-secret").json()
    assert rotated["secret"] != made["secret"]
    assert rotated["previousSecretExpiresAt"] is not None
    lifecycle.start_job(make_project(), Step.SCRIPT)
    deliver_all()
    (request,) = hooks.wait_for(1)
    for secret in (made["secret"], rotated["secret"]):
        Webhook(secret).verify(request.body, request.headers)


def test_after_the_grace_period_only_the_new_secret_signs(
    alice: Any, hooks: Receiver, make_project: Any
) -> None:
    endpoint = Endpoint.objects.create(owner=alice, url=hooks.url, events=["job.started"])
    old = endpoint.secret
    endpoint.previous_secret = old
    endpoint.previous_secret_expires_at = timezone.now() - timedelta(seconds=1)
    endpoint.secret = "whsec_" + "A" * 32
    endpoint.save()
    lifecycle.start_job(make_project(), Step.SCRIPT)
    deliver_all()
    (request,) = hooks.wait_for(1)
    Webhook(endpoint.secret).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(request.body, request.headers)


def test_every_attempt_is_listed_and_a_delivery_can_be_sent_again_by_hand(
    alice_api: APIClient, allow_loopback: None, make_project: Any
) -> None:
    with receiver([500]) as hooks:
        made = register(alice_api, hooks.url, ["job.started"])
        lifecycle.start_job(make_project(), Step.SCRIPT)
        deliver_all()
        listed = alice_api.get(f"{WEBHOOKS}/{made['id']}/deliveries").json()
        (shown,) = listed["results"]
        assert shown["state"] == "pending"
        assert shown["attempts"][0]["statusCode"] == 500
        assert shown["attempts"][0]["responseBody"] == "not now"
        resent = alice_api.post(f"{WEBHOOKS}/{made['id']}/deliveries/{shown['id']}/resend")
        assert resent.status_code == 202
        (attempt,) = deliver_all()
        assert attempt.status_code == 200
        assert len(hooks.wait_for(2)) == 2
    assert Delivery.objects.get().state == DeliveryState.DELIVERED


def test_a_turned_off_endpoint_is_not_sent_to(
    alice_api: APIClient, hooks: Receiver, make_project: Any
) -> None:
    made = register(alice_api, hooks.url, ["job.started"])
    lifecycle.start_job(make_project(), Step.SCRIPT)
    alice_api.patch(f"{WEBHOOKS}/{made['id']}", {"enabled": False}, format="json")
    delivery = Delivery.objects.get()
    assert delivery.state == DeliveryState.FAILED
    resend = alice_api.post(f"{WEBHOOKS}/{made['id']}/deliveries/{delivery.pk}/resend")
    assert resend.status_code == 409
    lifecycle.start_job(make_project(), Step.SCRIPT)
    assert Delivery.objects.count() == 1


# --- the API's description ------------------------------------------------------------


def test_the_schema_and_the_browsable_api_describe_the_webhooks(alice_api: APIClient) -> None:
    schema = alice_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    for path, methods in {
        "/api/video-creation/webhooks": {"get", "post"},
        "/api/video-creation/webhooks/{endpoint_id}": {"get", "patch", "delete"},
        "/api/video-creation/webhooks/{endpoint_id}/rotate-secret": {"post"},
        "/api/video-creation/webhooks/{endpoint_id}/deliveries": {"get"},
        "/api/video-creation/webhooks/{endpoint_id}/deliveries/{delivery_id}/resend": {"post"},
    }.items():
        assert methods <= set(paths[path]), path
    root = alice_api.get("/api/video-creation/").json()
    assert root["webhooks"].endswith("/api/video-creation/webhooks")
    page = alice_api.get(WEBHOOKS, HTTP_ACCEPT="text/html").content.decode()
    assert 'name="url"' in page and "job.completed" in page, "an HTML form to register one"


def test_an_attempt_that_outlived_its_claim_leaves_the_record_to_the_next(
    alice: Any, hooks: Receiver, make_project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    Endpoint.objects.create(owner=alice, url=hooks.url, events=["job.started"])
    lifecycle.start_job(make_project(), Step.SCRIPT)
    delivery = Delivery.objects.get()
    first_post = sending.post

    def slow_post(message: Delivery, now: datetime) -> sending.Outcome:
        # Meanwhile the claim ran out and a second task took the message and sent it.
        later = now + timedelta(seconds=3 * django_settings.WEBHOOK_TIMEOUT_SECONDS)
        monkeypatch.setattr(sending, "post", first_post)
        assert sending.deliver(message.pk, later) is not None
        return first_post(message, now)

    monkeypatch.setattr(sending, "post", slow_post)
    assert sending.deliver(delivery.pk) is None
    assert [a.number for a in Attempt.objects.all()] == [1]
    assert Delivery.objects.get().state == DeliveryState.DELIVERED


def test_a_refused_address_reads_as_a_sentence_and_is_not_remembered(
    alice_api: APIClient, settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    known = len(PLAIN_MESSAGES)
    for port in range(8000, 8005):
        answer = alice_api.post(WEBHOOKS, {"url": f"http://10.1.2.3:{port}/"}, format="json")
        assert answer.json()["detail"].startswith("10.1.2.3 is a private")
    assert len(PLAIN_MESSAGES) == known, "each request's sentence stays with its request"


def test_an_edit_changes_only_what_it_names(
    alice_api: APIClient, hooks: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender marks the endpoint failing while the owner's PATCH is under way."""
    made = register(alice_api, hooks.url)
    failing_since = timezone.now() - timedelta(hours=3)
    reads = webhooks_api.owned_endpoint

    def read_then_fail(request: Any, endpoint_id: Any) -> Endpoint:
        endpoint = reads(request, endpoint_id)
        Endpoint.objects.filter(pk=endpoint_id).update(failing_since=failing_since)
        return endpoint

    monkeypatch.setattr(webhooks_api, "owned_endpoint", read_then_fail)
    edited = alice_api.patch(f"{WEBHOOKS}/{made['id']}", {"description": "CMS"}, format="json")
    assert edited.json()["description"] == "CMS"
    assert Endpoint.objects.get().failing_since == failing_since
