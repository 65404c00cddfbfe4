"""Every change of a balance, each one an entry appended in the same transaction.

The lifecycle calls `charge_job` inside the transaction whose compare-and-set
starts a job, and `refund_jobs` inside the one that fails or cancels it
(DESIGN.md principle 11). A job is charged once and refunded once: the code
looks first, and the database's unique constraint refuses a second entry all
the same.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q

from credits.models import CreditAccount, EntryKind, LedgerEntry


class InsufficientCredits(Exception):
    """The user cannot pay the price; nothing was written."""

    def __init__(self, balance: int, price: int) -> None:
        super().__init__(f"This costs {price} credits; your balance is {balance}.")
        self.balance = balance
        self.price = price


def account_for(user_id: Any) -> CreditAccount:
    """The user's account; a user's first look at it opens it with the signup grant."""
    account = CreditAccount.objects.filter(pk=user_id).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            CreditAccount.objects.create(user_id=user_id, balance=0)
            if settings.CREDITS_SIGNUP_GRANT:
                _post(user_id, EntryKind.GRANT, settings.CREDITS_SIGNUP_GRANT, reason="Welcome")
    except IntegrityError:
        pass  # a concurrent first look opened it a moment ago
    return CreditAccount.objects.get(pk=user_id)


def balance_of(user_id: Any) -> int:
    return account_for(user_id).balance


def _post(user_id: Any, kind: str, amount: int, **entry: Any) -> LedgerEntry:
    """Move the balance by `amount` and append the entry that says why; refuse to go below 0."""
    enough = Q(balance__gte=-amount) if amount < 0 else Q()
    with transaction.atomic():
        moved = CreditAccount.objects.filter(enough, pk=user_id).update(
            balance=F("balance") + amount
        )
        if moved != 1:
            raise InsufficientCredits(balance_of(user_id), -amount)
        # Our UPDATE holds the row until commit: this is the balance our entry leaves.
        balance = CreditAccount.objects.values_list("balance", flat=True).get(pk=user_id)
        return LedgerEntry.objects.create(
            account_id=user_id, kind=kind, amount=amount, balance_after=balance, **entry
        )


def charge_job(project: Any, job: int, step: str, price: int, reason: str) -> LedgerEntry | None:
    """Charge the project's job `job`, unless it was charged already (paid up front)."""
    if price <= 0 or _entry(project, job, EntryKind.CHARGE).exists():
        return None
    account_for(project.owner_id)
    return _post(
        project.owner_id,
        EntryKind.CHARGE,
        -price,
        project=project,
        job=job,
        step=step,
        reason=reason,
    )


def refund_jobs(project: Any, from_job: int, reason: str) -> int:
    """Refund every charge of the project's job `from_job` and later ones (paid up front) once."""
    refunded = 0
    charges = LedgerEntry.objects.filter(
        project=project, job__gte=from_job, kind=EntryKind.CHARGE
    ).order_by("job")
    for charge in charges:
        if _entry(project, charge.job, EntryKind.REFUND).exists():
            continue
        _post(
            project.owner_id,
            EntryKind.REFUND,
            -charge.amount,
            project=project,
            job=charge.job,
            step=charge.step,
            reason=reason,
        )
        refunded += -charge.amount
    return refunded


def grant(user_id: Any, amount: int, reason: str) -> LedgerEntry | None:
    """Add credits; a negative amount is an adjustment that takes at most what there is."""
    account = account_for(user_id)
    if amount > 0:
        return _post(user_id, EntryKind.GRANT, amount, reason=reason)
    with transaction.atomic():
        balance = CreditAccount.objects.select_for_update().get(pk=account.pk).balance
        taken = min(-amount, balance)
        if taken == 0:
            return None
        return _post(user_id, EntryKind.ADJUSTMENT, -taken, reason=reason)


def _entry(project: Any, job: int, kind: str) -> Any:
    return LedgerEntry.objects.filter(project=project, job=job, kind=kind)
