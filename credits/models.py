"""The credits ledger: an append-only list of entries, and one balance row per user beside it.

The balance changes only in the transaction that appends the entry explaining
it (`credits.ledger`), so it always equals the sum of the user's entries; a
check constraint keeps it from going below zero, and a unique constraint lets a
job be charged once and refunded once, whatever retries or races happen.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from projects.models import _iso


class EntryKind(models.TextChoices):
    GRANT = "grant", "Grant"
    CHARGE = "charge", "Charge"
    REFUND = "refund", "Refund"
    ADJUSTMENT = "adjustment", "Adjustment"


class CreditAccount(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="credit_account",
    )
    balance = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0), name="balance_never_below_zero")
        ]

    def __str__(self) -> str:
        return f"{self.user} has {self.balance} credits"


class LedgerEntry(models.Model):
    account = models.ForeignKey(CreditAccount, on_delete=models.CASCADE, related_name="entries")
    kind = models.CharField(max_length=12, choices=EntryKind.choices)
    # Signed: grants and refunds add, charges take away, adjustments either.
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    project = models.ForeignKey(
        "projects.VideoProject",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="ledger_entries",
    )
    # The project's job this entry is for: its number and what it did.
    job = models.PositiveIntegerField(null=True, blank=True)
    step = models.CharField(max_length=10, blank=True, default="")
    reason = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "job", "kind"],
                condition=Q(kind__in=["charge", "refund"]),
                name="one_charge_and_one_refund_per_job",
            ),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0), name="entry_balance_at_least_0"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+d} → {self.balance_after}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "kind": self.kind,
            "amount": self.amount,
            "balanceAfter": self.balance_after,
            "projectId": str(self.project_id) if self.project_id else None,
            "job": {"number": self.job, "step": self.step} if self.job else None,
            "reason": self.reason,
            "createdAt": _iso(self.created_at),
        }
