"""The admin: balances and their ledgers to look at, and one way to move a balance — a grant.

Nothing here edits an account or an entry. A balance changes only beside the
entry that explains it (DESIGN.md principle 11), so the pages are view-only and
the "Grant credits" action goes through `credits.ledger.grant`, which appends
that entry in the same transaction.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import transaction
from django.db.models import F, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from credits import ledger
from credits.models import CreditAccount, LedgerEntry

ENTRY_HISTORY_LIMIT = 100
# The intermediate form names this many users; "select all" may pick thousands.
USERS_SHOWN = 20
# Far beyond any real grant, and far inside a 64-bit balance.
MAX_GRANT = 1_000_000_000


class GrantForm(forms.Form):
    amount = forms.IntegerField(
        min_value=-MAX_GRANT,
        max_value=MAX_GRANT,
        help_text="Credits to add to each account; a negative number takes them away.",
    )
    reason = forms.CharField(
        max_length=250,
        help_text="Shown in the user's ledger (GET credits), with your name after it.",
    )

    def clean_amount(self) -> int:
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError("Grant a number of credits other than 0.")
        return amount


def _has_grant_permission(request: HttpRequest) -> bool:
    """Who may grant: those Django would let change a credit account."""
    opts = CreditAccount._meta
    return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")


def _grant_credits(
    model_admin: admin.ModelAdmin, request: HttpRequest, user_ids: list[Any]
) -> TemplateResponse | None:
    """The action's two steps: the form (amount, reason), then every grant in one transaction."""
    form = GrantForm(request.POST if "apply" in request.POST else None)
    if form.is_bound and form.is_valid():
        amount, reason = form.cleaned_data["amount"], form.cleaned_data["reason"]
        _grant_all(model_admin, request, user_ids, amount, reason)
        return None  # the changelist again, with the messages
    users = (
        get_user_model()
        .objects.filter(pk__in=user_ids[:USERS_SHOWN])
        .annotate(credit_balance=F("credit_account__balance"))
        .order_by("pk")
    )
    select_across = request.POST.get("select_across", "0")
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Grant credits",
        "opts": model_admin.opts,
        "form": form,
        "users": users,
        "count": len(user_ids),
        "more": max(0, len(user_ids) - USERS_SHOWN),
        # "Select all" is applied to the changelist's query again; else the ticked rows.
        "selected": [] if select_across == "1" else user_ids,
        "select_across": select_across,
        "action": request.POST["action"],
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "media": model_admin.media,
    }
    return TemplateResponse(request, "admin/credits/grant_credits.html", context)


def _grant_all(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    user_ids: list[Any],
    amount: int,
    reason: str,
) -> None:
    signed = f"{reason} (by {request.user.get_username()})"
    users = get_user_model().objects.filter(pk__in=user_ids).order_by("pk")
    outcomes = []
    # All or nothing; in one order of rows, so two admins granting at once cannot deadlock.
    with transaction.atomic():
        for user in users:
            entry = ledger.grant(user.pk, amount, signed)
            outcomes.append(_outcome(user.get_username(), entry))
    noun = "account" if len(outcomes) == 1 else "accounts"
    shown = "; ".join(outcomes[:USERS_SHOWN])
    if len(outcomes) > USERS_SHOWN:
        shown += f"; and {len(outcomes) - USERS_SHOWN} more"
    model_admin.message_user(
        request, f"Credits granted to {len(outcomes)} {noun}: {shown}.", messages.SUCCESS
    )


def _outcome(username: str, entry: LedgerEntry | None) -> str:
    if entry is None:
        return f"{username} had no credits to take (balance 0)"
    return f"{username} {entry.amount:+d}, balance {entry.balance_after}"


@admin.register(CreditAccount)
class CreditAccountAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "balance", "updated_at"]
    list_select_related = ["user"]
    search_fields = ["user__username", "user__first_name", "user__last_name", "user__email"]
    ordering = ["user__username"]
    actions = ["grant_credits"]
    fields = ["user", "name", "balance", "updated_at", "ledger_entries"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        # An account opens on the user's first look (with the signup grant), or by a grant.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # View-only: a balance typed into a form would not match its entries.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # It would delete the ledger with it.
        return False

    def has_grant_permission(self, request: HttpRequest) -> bool:
        return _has_grant_permission(request)

    @admin.display(description="Name", ordering="user__last_name")
    def name(self, account: CreditAccount) -> str:
        return account.user.get_full_name() or "—"

    @admin.display(description="Ledger")
    def ledger_entries(self, account: CreditAccount) -> SafeString:
        newest = account.entries.select_related("project").order_by("-id")
        entries = list(newest[:ENTRY_HISTORY_LIMIT])
        if not entries:
            return format_html("<p>{}</p>", "No entries yet.")
        all_entries = reverse("admin:credits_ledgerentry_changelist") + f"?account={account.pk}"
        return format_html(
            '<p>The last {} of <a href="{}">{} entries</a>, newest first.</p>'
            "<table><thead><tr><th>When</th><th>Kind</th><th>Amount</th><th>Balance after</th>"
            "<th>Project</th><th>Job</th><th>Reason</th></tr></thead><tbody>{}</tbody></table>",
            len(entries),
            all_entries,
            account.entries.count(),
            format_html_join("\n", "<tr>{}</tr>", ((_entry_cells(entry),) for entry in entries)),
        )

    @admin.action(description="Grant credits", permissions=["grant"])
    def grant_credits(
        self, request: HttpRequest, accounts: QuerySet[CreditAccount]
    ) -> TemplateResponse | None:
        return _grant_credits(self, request, list(accounts.values_list("pk", flat=True)))


def _entry_cells(entry: LedgerEntry) -> SafeString:
    return format_html(
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
        localize(timezone.localtime(entry.created_at)),
        entry.get_kind_display(),
        f"{entry.amount:+d}",
        entry.balance_after,
        entry.project.title if entry.project else "—",
        f"{entry.job} ({entry.step})" if entry.job else "—",
        entry.reason,
    )


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "user", "kind", "signed_amount", "balance_after", "project"]
    list_display += ["job", "reason"]
    list_filter = ["kind"]
    list_select_related = ["account__user", "project"]
    search_fields = ["account__user__username", "account__user__email", "reason"]
    ordering = ["-id"]
    readonly_fields = ["account", "kind", "amount", "balance_after", "project", "job", "step"]
    readonly_fields += ["reason", "created_at"]

    # Append-only: an entry is never added, edited or deleted by hand; grants go
    # through the accounts' action, which writes the entry beside the balance.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="User", ordering="account__user__username")
    def user(self, entry: LedgerEntry) -> str:
        return entry.account.user.get_username()

    @admin.display(description="Amount", ordering="amount")
    def signed_amount(self, entry: LedgerEntry) -> str:
        return f"{entry.amount:+d}"


User = get_user_model()
# Whatever admin the users list has (Django's own here), extended rather than replaced.
_UserAdmin = type(admin.site._registry.get(User))


if issubclass(_UserAdmin, UserAdmin):
    # The same action on the users list: it also reaches users who have no account yet.
    class UserWithCreditsAdmin(_UserAdmin):  # type: ignore[misc,valid-type]
        actions = [*(_UserAdmin.actions or []), "grant_credits"]

        def has_grant_permission(self, request: HttpRequest) -> bool:
            return _has_grant_permission(request)

        @admin.action(description="Grant credits", permissions=["grant"])
        def grant_credits(
            self, request: HttpRequest, users: QuerySet[Any]
        ) -> TemplateResponse | None:
            return _grant_credits(self, request, list(users.values_list("pk", flat=True)))

    admin.site.unregister(User)
    admin.site.register(User, UserWithCreditsAdmin)
