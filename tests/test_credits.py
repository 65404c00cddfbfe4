"""Credits: a job is charged once when it starts and refunded once when it fails or is
cancelled, in the same transaction as its status change, and a balance always equals
the sum of its entries."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from credits import ledger
from credits.models import CreditAccount, EntryKind, LedgerEntry
from projects import lifecycle
from projects.models import Status, Step, VideoProject
from tests.conftest import SCRIPT, api_client_for

pytestmark = pytest.mark.django_db


def balance(user: User) -> int:
    return ledger.balance_of(user.pk)


def entries_of(user: User, **filters: Any) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(account_id=user.pk, **filters).order_by("id"))


def assert_books_balance(user: User) -> None:
    """The balance row equals the sum of the user's entries, and each entry's balance_after
    is the running sum up to it."""
    total = 0
    for entry in entries_of(user):
        total += entry.amount
        assert entry.balance_after == total, f"entry {entry.pk}: {entry.balance_after} != {total}"
    assert CreditAccount.objects.get(pk=user.pk).balance == total
    summed = LedgerEntry.objects.filter(account_id=user.pk).aggregate(total=Sum("amount"))
    assert (summed["total"] or 0) == total


def set_balance(user: User, credits: int) -> None:
    """Bring the user's balance to `credits` through the ledger, as an operator would."""
    ledger.grant(user.pk, credits - balance(user), "test set-up")
    assert balance(user) == credits


def url(project: VideoProject, action: str) -> str:
    return f"/api/video-creation/projects/{project.pk}/{action}"


def test_a_new_user_starts_with_the_signup_grant(alice: User, settings: Any) -> None:
    assert balance(alice) == settings.CREDITS_SIGNUP_GRANT
    [grant] = entries_of(alice)
    assert grant.kind == EntryKind.GRANT
    assert grant.balance_after == settings.CREDITS_SIGNUP_GRANT


def test_prices_follow_the_settings_and_the_current_script(
    make_project: Any, settings: Any
) -> None:
    settings.CREDITS_PER_SCRIPT = 2
    settings.CREDITS_PER_VIDEO_SECOND = 3
    project = make_project(scene_count=6, seconds_per_scene=4)

    assert project.prices() == {"script": 2, "render": 72}  # 6 scenes of 4 s at 3 a s
    scripted = lifecycle.edit_script(project, SCRIPT)  # 2 scenes of 2 s
    assert scripted.prices() == {"script": 2, "render": 12}
    assert scripted.to_status_dict()["prices"] == {"script": 2, "render": 12}


def test_starting_a_job_charges_its_price_in_the_same_write(
    alice: User, alice_api: APIClient, scripted_project: VideoProject
) -> None:
    before = balance(alice)

    answer = alice_api.post(url(scripted_project, "render"))

    assert answer.status_code == 202
    assert answer.json()["charged"] == 4
    [charge] = entries_of(alice, kind=EntryKind.CHARGE)
    assert (charge.amount, charge.project_id, charge.job, charge.step) == (
        -4,
        scripted_project.pk,
        1,
        "render",
    )
    assert balance(alice) == before - 4
    assert_books_balance(alice)


def test_a_start_the_user_cannot_pay_for_is_refused_with_402_and_changes_nothing(
    alice: User, alice_api: APIClient, scripted_project: VideoProject
) -> None:
    set_balance(alice, 3)
    version = VideoProject.objects.get(pk=scripted_project.pk).version

    answer = alice_api.post(url(scripted_project, "render"))

    assert answer.status_code == 402
    body = answer.json()
    assert body["code"] == "insufficient_credits"
    assert (body["balance"], body["price"]) == (3, 4)
    assert "4 credits" in body["detail"] and "3" in body["detail"]
    unchanged = VideoProject.objects.get(pk=scripted_project.pk)
    assert (unchanged.status, unchanged.version, unchanged.job_number) == (Status.DRAFT, version, 0)
    assert balance(alice) == 3
    assert entries_of(alice, kind=EntryKind.CHARGE) == []


def test_a_failed_job_is_refunded_once_in_the_failing_write(
    alice: User, scripted_project: VideoProject
) -> None:
    before = balance(alice)
    project = lifecycle.start_job(scripted_project, Step.RENDER)
    lifecycle.claim(project.pk, Step.RENDER, "worker-1")

    assert lifecycle.fail(project.pk, "worker-1", "boom", "It broke.")
    assert not lifecycle.fail(project.pk, None, "boom", "It broke again.")

    [refund] = entries_of(alice, kind=EntryKind.REFUND)
    assert (refund.amount, refund.job) == (4, 1)
    assert balance(alice) == before
    assert VideoProject.objects.get(pk=project.pk).charged == 0
    assert_books_balance(alice)


def test_a_cancelled_job_is_refunded_once(
    alice: User, alice_api: APIClient, make_project: Any
) -> None:
    project = make_project()
    before = balance(alice)
    alice_api.post(url(project, "script"))

    assert alice_api.post(url(project, "cancel")).status_code == 202
    assert alice_api.post(url(project, "cancel")).status_code == 409

    assert [e.amount for e in entries_of(alice, project=project)] == [-1, 1]
    assert balance(alice) == before
    assert alice_api.get(url(project, "status")).json()["charged"] == 0


def test_a_finished_job_keeps_its_charge_when_a_later_job_fails(
    alice: User, scripted_project: VideoProject
) -> None:
    before = balance(alice)
    project = lifecycle.start_job(scripted_project, Step.RENDER)
    lifecycle.claim(project.pk, Step.RENDER, "worker-1")
    lifecycle.finish_render(project.pk, "worker-1", "videos/x.mp4")
    again = lifecycle.start_job(VideoProject.objects.get(pk=project.pk), Step.RENDER)
    lifecycle.claim(again.pk, Step.RENDER, "worker-2")
    lifecycle.fail(again.pk, "worker-2", "boom", "It broke.")

    assert [(e.kind, e.job, e.amount) for e in entries_of(alice, project=project)] == [
        ("charge", 1, -4),
        ("charge", 2, -4),
        ("refund", 2, 4),
    ]
    assert balance(alice) == before - 4


def test_a_lost_worker_and_its_retry_never_charge_again(
    alice: User, scripted_project: VideoProject
) -> None:
    project = lifecycle.start_job(scripted_project, Step.RENDER)
    lifecycle.claim(project.pk, Step.RENDER, "dead-worker")
    VideoProject.objects.filter(pk=project.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert lifecycle.sweep_lost_jobs() == 1
    assert lifecycle.claim(project.pk, Step.RENDER, "new-worker") is not None
    assert lifecycle.claim(project.pk, Step.RENDER, "redelivered-task") is None
    lifecycle.finish_render(project.pk, "new-worker", "videos/x.mp4")

    assert len(entries_of(alice, kind=EntryKind.CHARGE)) == 1
    assert entries_of(alice, kind=EntryKind.REFUND) == []


def test_the_database_refuses_a_second_charge_or_refund_for_a_job(
    alice: User, scripted_project: VideoProject
) -> None:
    project = lifecycle.start_job(scripted_project, Step.RENDER)

    for kind in (EntryKind.CHARGE, EntryKind.REFUND, EntryKind.REFUND):
        try:
            with transaction.atomic():
                LedgerEntry.objects.create(
                    account_id=alice.pk,
                    kind=kind,
                    amount=0,
                    balance_after=0,
                    project=project,
                    job=1,
                )
        except IntegrityError:
            continue
        assert kind == EntryKind.REFUND, f"a second {kind} for job 1 was accepted"


def test_the_balance_never_goes_below_zero(alice: User) -> None:
    set_balance(alice, 5)

    with pytest.raises(ledger.InsufficientCredits):
        ledger._post(alice.pk, EntryKind.CHARGE, -6)
    with pytest.raises(IntegrityError), transaction.atomic():
        CreditAccount.objects.filter(pk=alice.pk).update(balance=-1)

    assert ledger.grant(alice.pk, -50, "take it all") is not None
    assert balance(alice) == 0
    assert ledger.grant(alice.pk, -1, "nothing left") is None
    assert_books_balance(alice)


def test_the_openai_endpoint_refuses_a_video_it_cannot_pay_for_and_creates_nothing(
    alice: User,
) -> None:
    set_balance(alice, 5)  # the script (1) and two 3 s scenes (6) cost 7
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=alice)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")

    answer = client.post(
        "/v1/chat/completions",
        {
            "model": "videocreation-16x9",
            "messages": [{"role": "user", "content": "Night trains cross Europe at dusk."}],
            "scene_count": 2,
            "seconds_per_scene": 3,
        },
        format="json",
    )

    assert answer.status_code == 429, answer.content
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "7 credits" in error["message"]
    assert VideoProject.objects.count() == 0
    assert balance(alice) == 5


# --- races, with real concurrent requests ------------------------------------------


def _at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads released together; each closes its connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait(timeout=10)
        try:
            results[index] = work(index)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_starts_give_one_job_and_one_charge(
    alice: User, make_project: Any
) -> None:
    project = make_project()
    before = balance(alice)

    answers = _at_once(20, lambda _: api_client_for(alice).post(url(project, "script")))

    assert sorted(answer.status_code for answer in answers) == [202] + [409] * 19
    assert len(entries_of(alice, kind=EntryKind.CHARGE)) == 1
    assert balance(alice) == before - 1
    assert_books_balance(alice)


@pytest.mark.django_db(transaction=True)
def test_two_projects_started_at_once_by_a_user_who_can_pay_for_one(
    alice: User, make_project: Any
) -> None:
    first = lifecycle.edit_script(make_project(), SCRIPT)
    second = lifecycle.edit_script(make_project(), SCRIPT)
    set_balance(alice, 6)  # each render costs 4
    projects = [first, second]

    answers = _at_once(2, lambda i: api_client_for(alice).post(url(projects[i], "render")))

    assert sorted(answer.status_code for answer in answers) == [202, 402]
    refused = next(answer.json() for answer in answers if answer.status_code == 402)
    assert (refused["balance"], refused["price"]) == (2, 4)
    statuses = sorted(VideoProject.objects.values_list("status", flat=True))
    assert statuses == [Status.DRAFT, Status.RENDERING]
    assert balance(alice) == 2
    assert_books_balance(alice)


@pytest.mark.django_db(transaction=True)
def test_a_failure_recorded_by_the_worker_and_the_sweeper_at_once_is_refunded_once(
    alice: User, scripted_project: VideoProject, settings: Any
) -> None:
    settings.JOB_MAX_ATTEMPTS = 1
    project = lifecycle.start_job(scripted_project, Step.RENDER)
    lifecycle.claim(project.pk, Step.RENDER, "worker-1")
    VideoProject.objects.filter(pk=project.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    before = balance(alice)

    _at_once(
        2,
        lambda i: (
            lifecycle.fail(project.pk, "worker-1", "boom", "It broke.")
            if i == 0
            else lifecycle.sweep_lost_jobs()
        ),
    )

    assert VideoProject.objects.get(pk=project.pk).status == Status.FAILED
    assert len(entries_of(alice, kind=EntryKind.REFUND)) == 1
    assert balance(alice) == before + 4
    assert_books_balance(alice)


@pytest.mark.django_db(transaction=True)
def test_after_a_random_run_every_balance_equals_the_sum_of_its_entries(
    alice: User, charlie: User, make_project: Any
) -> None:
    chance = random.Random(12)
    users = [alice, charlie]
    set_balance(charlie, 9)
    projects = [lifecycle.edit_script(make_project(owner=users[i % 2]), SCRIPT) for i in range(6)]

    def act(index: int) -> None:
        for step in range(15):
            project = VideoProject.objects.get(pk=projects[(index + step) % len(projects)].pk)
            action = chance.choice(["script", "render", "cancel", "fail", "finish"])
            try:
                if action in ("script", "render"):
                    lifecycle.start_job(project, Step(action))
                elif action == "cancel":
                    lifecycle.cancel(project)
                elif project.is_running:
                    owner = f"worker-{index}"
                    if lifecycle.claim(project.pk, Step(project.current_step), owner) is None:
                        continue
                    if action == "fail":
                        lifecycle.fail(project.pk, owner, "boom", "It broke.")
                    elif project.current_step == Step.RENDER:
                        lifecycle.finish_render(project.pk, owner, "videos/x.mp4")
                    else:
                        lifecycle.finish_script(project.pk, owner, SCRIPT)
            except (lifecycle.Conflict, ledger.InsufficientCredits):
                pass

    _at_once(4, act)

    for user in users:
        assert_books_balance(user)
        charges = entries_of(user, kind=EntryKind.CHARGE)
        refunds = entries_of(user, kind=EntryKind.REFUND)
        assert len({(e.project_id, e.job) for e in charges}) == len(charges)
        assert {(e.project_id, e.job) for e in refunds} <= {(e.project_id, e.job) for e in charges}
    for project in VideoProject.objects.all():
        paid = LedgerEntry.objects.filter(project=project, job=project.job_number)
        assert project.charged == -sum(e.amount for e in paid) or project.job_number == 0
