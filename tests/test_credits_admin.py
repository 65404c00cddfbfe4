"""The credits admin: balances and ledgers to look at, grants through an intermediate form."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from credits import ledger
from credits.models import CreditAccount, EntryKind, LedgerEntry
from projects.models import VideoProject

pytestmark = pytest.mark.django_db

ACCOUNTS = reverse("admin:credits_creditaccount_changelist")
ENTRIES = reverse("admin:credits_ledgerentry_changelist")
USERS = reverse("admin:auth_user_changelist")


@pytest.fixture
def staff(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_superuser("root", password="root-password-1")


@pytest.fixture
def admin_browser(staff: User) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def account_of(user: User) -> CreditAccount:
    return ledger.account_for(user.pk)


def entries_of(user: User) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(account_id=user.pk).order_by("id"))


def ask_to_grant(client: Client, changelist: str, *users: User) -> Any:
    """The first step: choose the action on the ticked rows; answers the intermediate form."""
    return client.post(
        changelist,
        {"action": "grant_credits", "index": "0", "_selected_action": [u.pk for u in users]},
    )


def grant(client: Client, changelist: str, amount: Any, reason: str, *users: User) -> Any:
    """The second step, as the intermediate form posts it."""
    return client.post(
        changelist,
        {
            "action": "grant_credits",
            "_selected_action": [user.pk for user in users],
            "select_across": "0",
            "apply": "yes",
            "amount": str(amount),
            "reason": reason,
        },
        follow=True,
    )


def messages_of(response: Any) -> list[str]:
    return [message.message for message in response.context["messages"]]


# --- the lists and pages -------------------------------------------------------------


def test_the_accounts_list_shows_each_users_name_and_balance(
    admin_browser: Client, alice: User, charlie: User
) -> None:
    alice.first_name, alice.last_name = "Alice", "Liddell"
    alice.save()
    account_of(alice)
    ledger.grant(charlie.pk, 23, "a gift")

    response = admin_browser.get(ACCOUNTS)

    assert response.status_code == 200
    page = response.content.decode()
    assert "Alice Liddell" in page
    assert '<td class="field-balance">100</td>' in page
    assert '<td class="field-balance">123</td>' in page


def test_the_accounts_list_is_searchable_by_the_users_name(
    admin_browser: Client, alice: User, charlie: User
) -> None:
    alice.last_name = "Liddell"
    alice.save()
    account_of(alice)
    account_of(charlie)

    by_surname = admin_browser.get(ACCOUNTS, {"q": "liddell"})
    by_username = admin_browser.get(ACCOUNTS, {"q": "charl"})

    assert [account.pk for account in by_surname.context["cl"].result_list] == [alice.pk]
    assert [account.pk for account in by_username.context["cl"].result_list] == [charlie.pk]


def test_the_account_page_lists_its_entries_newest_first_and_cannot_be_edited(
    admin_browser: Client, alice: User, scripted_project: VideoProject
) -> None:
    ledger.grant(alice.pk, 5, "first gift")
    ledger.grant(alice.pk, 6, "second gift")
    url = reverse("admin:credits_creditaccount_change", args=[alice.pk])

    page = admin_browser.get(url).content.decode()
    refused = admin_browser.post(url, {"balance": "1000000"})

    cells = [f"<td>{reason}</td>" for reason in ("second gift", "first gift", "Welcome")]
    assert page.index(cells[0]) < page.index(cells[1]) < page.index(cells[2])
    assert "The last 3 of" in page
    assert 'name="balance"' not in page
    assert refused.status_code == 403
    assert account_of(alice).balance == 111


def test_the_link_to_all_entries_lists_only_that_accounts_entries(
    admin_browser: Client, alice: User, charlie: User
) -> None:
    ledger.grant(alice.pk, 5, "for alice")
    ledger.grant(charlie.pk, 6, "for charlie")

    response = admin_browser.get(ENTRIES, {"account": alice.pk})

    assert response.status_code == 200
    shown = [entry.pk for entry in response.context["cl"].result_list]
    assert shown == [entry.pk for entry in reversed(entries_of(alice))]


def test_entries_are_filterable_by_kind_and_searchable_by_user(
    admin_browser: Client, alice: User, charlie: User
) -> None:
    ledger.grant(alice.pk, -30, "an adjustment")
    account_of(charlie)

    adjustments = admin_browser.get(ENTRIES, {"kind__exact": "adjustment"})
    charlies = admin_browser.get(ENTRIES, {"q": "charlie"})

    assert [entry.reason for entry in adjustments.context["cl"].result_list] == ["an adjustment"]
    assert [entry.account_id for entry in charlies.context["cl"].result_list] == [charlie.pk]


def test_entries_cannot_be_added_changed_or_deleted_in_the_admin(
    admin_browser: Client, alice: User
) -> None:
    entry = ledger.grant(alice.pk, 5, "a gift")
    assert entry is not None
    change = reverse("admin:credits_ledgerentry_change", args=[entry.pk])

    add = admin_browser.get(reverse("admin:credits_ledgerentry_add"))
    edit = admin_browser.post(change, {"amount": "500", "balance_after": "600"})
    delete = admin_browser.post(
        reverse("admin:credits_ledgerentry_delete", args=[entry.pk]), {"post": "yes"}
    )
    bulk_delete = admin_browser.post(
        ENTRIES, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"}
    )
    view = admin_browser.get(change)

    assert add.status_code == 403
    assert edit.status_code == 403
    assert delete.status_code == 403
    assert bulk_delete.status_code == 200  # the list again: the action is not offered
    assert "delete_selected" not in bulk_delete.content.decode()
    assert view.status_code == 200
    assert 'name="amount"' not in view.content.decode()
    entry.refresh_from_db()
    assert (entry.amount, entry.balance_after) == (5, 105)
    assert len(entries_of(alice)) == 2


# --- granting -------------------------------------------------------------------------


def test_granting_asks_for_an_amount_and_a_reason_first(admin_browser: Client, alice: User) -> None:
    account_of(alice)

    response = ask_to_grant(admin_browser, ACCOUNTS, alice)

    assert response.status_code == 200
    assert response.templates[0].name == "admin/credits/grant_credits.html"
    page = response.content.decode()
    assert 'name="amount"' in page and 'name="reason"' in page
    assert "alice — 100 credits now" in page
    assert len(entries_of(alice)) == 1


def test_the_grant_action_adds_credits_through_the_ledger(
    admin_browser: Client, alice: User, charlie: User
) -> None:
    account_of(alice)
    account_of(charlie)

    response = grant(admin_browser, ACCOUNTS, 25, "Beta tester", alice, charlie)

    assert response.redirect_chain == [(ACCOUNTS, 302)]
    assert messages_of(response) == [
        "Credits granted to 2 accounts: alice +25, balance 125; charlie +25, balance 125."
    ]
    for user in (alice, charlie):
        latest = entries_of(user)[-1]
        assert (latest.kind, latest.amount, latest.balance_after) == (EntryKind.GRANT, 25, 125)
        assert latest.reason == "Beta tester (by root)"
        assert account_of(user).balance == 125


def test_a_negative_grant_takes_credits_but_stops_at_zero(
    admin_browser: Client, alice: User, charlie: User
) -> None:
    ledger.grant(alice.pk, -90, "down to 10")
    ledger.grant(charlie.pk, -100, "down to 0")

    response = grant(admin_browser, ACCOUNTS, -40, "Refund abuse", alice, charlie)

    assert messages_of(response) == [
        "Credits granted to 2 accounts: alice -10, balance 0; "
        "charlie had no credits to take (balance 0)."
    ]
    assert account_of(alice).balance == account_of(charlie).balance == 0
    assert entries_of(alice)[-1].kind == EntryKind.ADJUSTMENT
    assert entries_of(alice)[-1].amount == -10
    assert [entry.reason for entry in entries_of(charlie)] == ["Welcome", "down to 0"]


def test_an_invalid_amount_shows_the_form_again_and_changes_nothing(
    admin_browser: Client, alice: User
) -> None:
    account_of(alice)

    for amount in ("0", "ten", "1.5", str(10**12)):
        response = grant(admin_browser, ACCOUNTS, amount, "a reason", alice)

        assert response.status_code == 200
        assert response.templates[0].name == "admin/credits/grant_credits.html"
        assert response.context["form"].errors["amount"], amount
    missing_reason = grant(admin_browser, ACCOUNTS, 5, "", alice)

    assert missing_reason.context["form"].errors["reason"]
    assert len(entries_of(alice)) == 1


def test_users_without_an_account_can_be_granted_credits_from_the_users_list(
    admin_browser: Client, alice: User
) -> None:
    assert not CreditAccount.objects.filter(pk=alice.pk).exists()

    form = ask_to_grant(admin_browser, USERS, alice)
    response = grant(admin_browser, USERS, 5, "Welcome bonus", alice)

    assert "no account yet" in form.content.decode()
    assert response.redirect_chain == [(USERS, 302)]
    assert [(entry.kind, entry.amount) for entry in entries_of(alice)] == [
        (EntryKind.GRANT, 100),
        (EntryKind.GRANT, 5),
    ]


def test_granting_to_every_account_at_once_covers_those_not_on_the_page(
    admin_browser: Client, django_user_model: type[User]
) -> None:
    users = [django_user_model.objects.create_user(f"user{n:03}") for n in range(105)]
    for user in users:
        account_of(user)

    response = admin_browser.post(
        ACCOUNTS,
        {
            "action": "grant_credits",
            "_selected_action": [users[0].pk],
            "select_across": "1",
            "apply": "yes",
            "amount": "1",
            "reason": "Everyone",
        },
        follow=True,
    )

    assert messages_of(response)[0].startswith("Credits granted to 105 accounts:")
    assert set(CreditAccount.objects.values_list("balance", flat=True)) == {101}


def test_staff_who_may_only_view_accounts_are_not_offered_the_grant(
    django_user_model: type[User], alice: User
) -> None:
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_creditaccount"))
    client = Client()
    client.force_login(viewer)
    account_of(alice)

    listed = client.get(ACCOUNTS)
    response = grant(client, ACCOUNTS, 1000, "for me", alice)

    assert listed.status_code == 200
    assert "grant_credits" not in listed.content.decode()
    assert response.templates[0].name != "admin/credits/grant_credits.html"
    assert account_of(alice).balance == 100
