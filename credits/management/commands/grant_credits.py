"""`manage.py grant_credits <username> <amount> [--reason TEXT]`: a grant from the terminal."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from credits import ledger
from credits.models import LedgerEntry

# Far beyond any real grant, and far inside a 64-bit balance.
MAX_GRANT = 1_000_000_000
DEFAULT_REASON = "Granted with manage.py grant_credits"


class Command(BaseCommand):
    help = (
        "Add credits to a user's account and print the new balance. A negative amount "
        "takes credits away, never more than the account holds."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        # Read as text, so that "ten" or "1.5" gets our sentence rather than argparse's.
        parser.add_argument("amount", help="whole credits; negative to take away")
        parser.add_argument("--reason", default=DEFAULT_REASON, help="shown in the user's ledger")

    def handle(self, *args: Any, username: str, amount: str, reason: str, **options: Any) -> None:
        change = _whole_number(amount)
        if len(reason) > 300:
            raise CommandError("Give a reason of at most 300 characters.")
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"There is no user named {username!r}; nothing was changed.")
        entry = ledger.grant(user.pk, change, reason)
        self.stdout.write(_outcome(username, change, entry))
        balance = entry.balance_after if entry is not None else 0  # None: nothing to take
        self.stdout.write(f"Balance of {username}: {_credits(balance)}.")


def _whole_number(amount: str) -> int:
    try:
        credits = int(amount)
    except ValueError:
        raise CommandError(
            f"The amount must be a whole number of credits, like 50 or -10, not {amount!r}."
        ) from None
    if credits == 0 or abs(credits) > MAX_GRANT:
        raise CommandError(f"The amount must be between -{MAX_GRANT:,} and {MAX_GRANT:,}, not 0.")
    return credits


def _outcome(username: str, asked: int, entry: LedgerEntry | None) -> str:
    if entry is None:
        return f"{username} has no credits to take; nothing was changed."
    if entry.amount != asked:
        return f"Took {_credits(-entry.amount)} from {username}: all there were ({asked} asked)."
    if asked < 0:
        return f"Took {_credits(-asked)} from {username}."
    return f"Granted {_credits(asked)} to {username}."


def _credits(count: int) -> str:
    return f"{count} credit" if count == 1 else f"{count} credits"
