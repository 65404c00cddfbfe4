"""`GET credits`: the caller's balance and their own ledger entries, newest first, paginated."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from credits import ledger
from credits.models import LedgerEntry
from projects.models import VideoProject

pytestmark = pytest.mark.django_db

CREDITS = "/api/video-creation/credits"
ENTRY_KEYS = {"id", "kind", "amount", "balanceAfter", "projectId", "job", "reason", "createdAt"}


def grants(user: User, count: int) -> list[int]:
    """`count` grants of 1, 2, 3, … credits; their ids, oldest first."""
    return [ledger.grant(user.pk, number, f"grant {number}").pk for number in range(1, count + 1)]


def test_a_first_look_opens_the_account_with_the_signup_grant(
    alice: User, alice_api: APIClient, settings: Any
) -> None:
    assert not LedgerEntry.objects.exists()

    response = alice_api.get(CREDITS)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"balance", "entries", "count", "next", "previous"}
    assert body["balance"] == settings.CREDITS_SIGNUP_GRANT
    assert (body["count"], body["next"], body["previous"]) == (1, None, None)
    [welcome] = body["entries"]
    assert set(welcome) == ENTRY_KEYS
    assert welcome["kind"] == "grant"
    assert welcome["amount"] == welcome["balanceAfter"] == settings.CREDITS_SIGNUP_GRANT
    assert (welcome["projectId"], welcome["job"], welcome["reason"]) == (None, None, "Welcome")
    assert welcome["createdAt"].endswith("Z")


def test_a_second_look_grants_nothing_more(alice: User, alice_api: APIClient) -> None:
    first = alice_api.get(CREDITS).json()
    second = alice_api.get(CREDITS).json()

    assert second == first


def test_entries_come_newest_first_with_the_job_they_paid_for(
    alice_api: APIClient, scripted_project: VideoProject
) -> None:
    start = alice_api.post(f"/api/video-creation/projects/{scripted_project.pk}/render")
    assert start.status_code == 202, start.json()
    price = start.json()["charged"]
    cancel = alice_api.post(f"/api/video-creation/projects/{scripted_project.pk}/cancel")
    assert cancel.status_code == 202, cancel.json()

    body = alice_api.get(CREDITS).json()

    refund, charge, welcome = body["entries"]
    assert [refund["kind"], charge["kind"], welcome["kind"]] == ["refund", "charge", "grant"]
    assert refund["id"] > charge["id"] > welcome["id"]
    assert charge["amount"] == -price and refund["amount"] == price
    assert charge["balanceAfter"] == welcome["balanceAfter"] - price
    assert refund["balanceAfter"] == body["balance"] == welcome["balanceAfter"]
    for entry in (charge, refund):
        assert entry["projectId"] == str(scripted_project.pk)
        assert entry["job"] == {"number": 1, "step": "render"}


def test_entries_are_paginated_like_the_projects_list(alice: User, alice_api: APIClient) -> None:
    welcome = ledger.account_for(alice.pk).entries.get().pk
    newest_first = [*reversed(grants(alice, 24)), welcome]

    first = alice_api.get(CREDITS).json()
    second = alice_api.get(first["next"]).json()

    assert first["count"] == second["count"] == 25
    assert [entry["id"] for entry in first["entries"]] == newest_first[:20]
    assert first["previous"] is None
    assert "page=2" in first["next"]
    assert [entry["id"] for entry in second["entries"]] == newest_first[20:]
    assert second["next"] is None
    assert second["previous"] is not None
    assert first["balance"] == second["balance"] == 100 + sum(range(1, 25))


def test_the_page_size_can_be_chosen_up_to_100(alice: User, alice_api: APIClient) -> None:
    ledger.account_for(alice.pk)
    grants(alice, 6)

    small = alice_api.get(CREDITS, {"pageSize": 3}).json()
    too_big = alice_api.get(CREDITS, {"pageSize": 101})

    assert len(small["entries"]) == 3
    assert "pageSize=3" in small["next"]
    assert too_big.status_code == 400
    assert too_big.json()["code"] == "invalid"
    assert "pageSize" in too_big.json()["fields"]


def test_a_malformed_page_is_refused_and_a_page_past_the_end_is_not_found(
    alice_api: APIClient,
) -> None:
    malformed = alice_api.get(CREDITS, {"page": "-1"})
    past_the_end = alice_api.get(CREDITS, {"page": "9"})

    assert malformed.status_code == 400
    assert malformed.json()["code"] == "invalid"
    assert past_the_end.status_code == 404
    assert past_the_end.json()["code"] == "not_found"


def test_alice_never_sees_charlies_entries(
    alice: User, charlie: User, alice_api: APIClient, charlie_api: APIClient
) -> None:
    ledger.account_for(alice.pk)
    charlies = set(grants(charlie, 3))
    ledger.grant(alice.pk, 7, "for alice")

    alice_sees = alice_api.get(CREDITS, {"pageSize": 100}).json()
    charlie_sees = charlie_api.get(CREDITS, {"pageSize": 100}).json()

    alice_ids = {entry["id"] for entry in alice_sees["entries"]}
    assert alice_ids.isdisjoint(charlies)
    assert alice_sees["count"] == 2
    assert [entry["reason"] for entry in alice_sees["entries"]] == ["for alice", "Welcome"]
    assert alice_sees["balance"] == 107
    assert charlies <= {entry["id"] for entry in charlie_sees["entries"]}
    assert charlie_sees["balance"] == 106


def test_the_query_count_does_not_grow_with_the_entries(
    alice: User, alice_api: APIClient, scripted_project: VideoProject
) -> None:
    ledger.account_for(alice.pk)
    alice_api.get(CREDITS)  # the token's first use, out of the count
    with CaptureQueriesContext(connection) as few:
        alice_api.get(CREDITS)
    alice_api.post(f"/api/video-creation/projects/{scripted_project.pk}/render")
    alice_api.post(f"/api/video-creation/projects/{scripted_project.pk}/cancel")
    grants(alice, 20)

    with CaptureQueriesContext(connection) as many:
        response = alice_api.get(CREDITS)

    assert len(response.json()["entries"]) == 20
    assert len(many.captured_queries) == len(few.captured_queries)


def test_it_needs_a_signed_in_caller() -> None:
    response = APIClient().get(CREDITS)

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert not LedgerEntry.objects.exists()


def test_the_openapi_schema_documents_the_credits_endpoint(alice_api: APIClient) -> None:
    response = alice_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    schema = response.json()
    operation = schema["paths"]["/api/video-creation/credits"]["get"]
    assert operation["operationId"] == "get_credits"
    assert {parameter["name"] for parameter in operation["parameters"]} >= {"page", "pageSize"}
    credits = schema["components"]["schemas"]["Credits"]["properties"]
    assert set(credits) == {"balance", "entries", "count", "next", "previous"}
    assert set(schema["components"]["schemas"]["LedgerEntry"]["properties"]) == ENTRY_KEYS


def test_the_api_root_links_to_the_credits(alice_api: APIClient) -> None:
    response = alice_api.get("/api/video-creation/", HTTP_ACCEPT="application/json")

    assert response.json()["credits"].endswith(CREDITS)
