"""`manage.py grant_credits <username> <amount> [--reason TEXT]`."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from credits import ledger
from credits.models import EntryKind, LedgerEntry

pytestmark = pytest.mark.django_db


def grant_credits(*args: str) -> str:
    out = StringIO()
    call_command("grant_credits", *args, stdout=out)
    return out.getvalue()


def entries_of(user: User) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(account_id=user.pk).order_by("id"))


def test_it_grants_credits_and_prints_the_new_balance(alice: User) -> None:
    ledger.account_for(alice.pk)

    out = grant_credits("alice", "50", "--reason", "Beta tester")

    assert out == "Granted 50 credits to alice.\nBalance of alice: 150 credits.\n"
    latest = entries_of(alice)[-1]
    assert (latest.kind, latest.amount, latest.balance_after) == (EntryKind.GRANT, 50, 150)
    assert latest.reason == "Beta tester"


def test_a_user_without_an_account_gets_the_signup_grant_too(alice: User) -> None:
    out = grant_credits("alice", "1")

    assert out.endswith("Balance of alice: 101 credits.\n")
    assert [entry.reason for entry in entries_of(alice)] == [
        "Welcome",
        "Granted with manage.py grant_credits",
    ]


def test_a_negative_amount_takes_credits(alice: User) -> None:
    out = grant_credits("alice", "-30")

    assert out == "Took 30 credits from alice.\nBalance of alice: 70 credits.\n"
    assert entries_of(alice)[-1].kind == EntryKind.ADJUSTMENT


def test_a_negative_amount_stops_at_zero(alice: User) -> None:
    ledger.grant(alice.pk, -97, "down to 3")

    taken = grant_credits("alice", "-10")
    nothing = grant_credits("alice", "-10")

    assert taken == "Took 3 credits from alice: all there were (-10 asked).\n" + (
        "Balance of alice: 0 credits.\n"
    )
    assert nothing == "alice has no credits to take; nothing was changed.\n" + (
        "Balance of alice: 0 credits.\n"
    )
    assert [entry.amount for entry in entries_of(alice)] == [100, -97, -3]


def test_an_unknown_user_is_a_clear_error_and_changes_nothing(alice: User) -> None:
    with pytest.raises(CommandError, match="There is no user named 'bob'"):
        grant_credits("bob", "50")

    assert not LedgerEntry.objects.exists()


@pytest.mark.parametrize("amount", ["ten", "1.5", "0", "", "10000000000"])
def test_an_amount_that_is_not_a_sensible_whole_number_is_refused(alice: User, amount: str) -> None:
    with pytest.raises(CommandError, match="The amount must be"):
        grant_credits("alice", amount)

    assert not LedgerEntry.objects.exists()
