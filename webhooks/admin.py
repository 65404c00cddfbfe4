"""The admin: users' webhook endpoints, their messages and every attempt.

An endpoint's secret is never on any page (not the current one, not the one
rotated out): whoever holds it can sign messages its owner's receiver would
trust. An operator may add an endpoint for a user; its secret stays unshown,
and the owner gets one of their own with `POST webhooks/{id}/rotate-secret`.
Past that, nothing here edits a row through a form: the sender updates an
endpoint's `failing_since` and `disabled_at` while a page is open, so a form's
save would write stale values back. The buttons (Turn off, Turn back on, Send
again) make conditional updates, or call `outbox.resend`, and each success is
written to the admin's history (a LogEntry). Deliveries and attempts are a
record: they are never added, edited or deleted by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.loader import render_to_string
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import localize
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from projects.models import VideoProject
from webhooks import endpoints
from webhooks.addresses import RefusedAddress, check_url
from webhooks.models import EVENT_TYPES, Delivery, DeliveryState, Endpoint, EventType

ENDPOINT_OFF = "Its endpoint is turned off: turn the endpoint back on before sending to it again."
# The newest few on an endpoint's page; the rest are in the deliveries list, filtered.
RECENT_DELIVERIES = 20
# A URL is cut in the lists (the whole URL is its tooltip and on its page); CSS
# wraps what is left inside its column, so one long URL cannot push the others off.
LIST_URL_CHARS = 300
# The messages list has more columns: its endpoint's URL is cut shorter.
DELIVERY_LIST_URL_CHARS = 120
# The page's heading and breadcrumbs name the endpoint; its field shows the whole URL.
HEADING_URL_CHARS = 120
# The receiver's answer is kept up to WEBHOOK_RESPONSE_LIMIT bytes; a table cell shows its start.
RESPONSE_PREVIEW_CHARS = 500


@dataclass(frozen=True)
class Button:
    """A button on a change page: a POST to one of the views below."""

    label: str
    url: str
    css_class: str = ""


def _wrapped_url(url: str, chars: int = LIST_URL_CHARS) -> SafeString:
    return format_html(
        '<span class="webhook-url" title="{}">{}</span>', url, Truncator(url).chars(chars)
    )


def _when(moment: datetime | None) -> str:
    """A time as the admin shows a date field (a method's value is shown as it is, raw)."""
    return localize(timezone.localtime(moment)) if moment is not None else "-"


def _named(endpoint: Endpoint) -> str:
    """The endpoint in a sentence: its URL, cut if long."""
    return Truncator(endpoint.url).chars(HEADING_URL_CHARS)


def _post_only(request: HttpRequest) -> HttpResponse | None:
    return None if request.method == "POST" else HttpResponseNotAllowed(["POST"])


# --- endpoints ---------------------------------------------------------------------------


class EndpointAddForm(forms.ModelForm):
    """An endpoint made by an operator for a user: the API's checks, the same limit."""

    events = forms.MultipleChoiceField(
        choices=[(value, value) for value in EVENT_TYPES],
        widget=forms.CheckboxSelectMultiple,
        initial=EVENT_TYPES,
        error_messages={"required": "Choose at least one event."},
        help_text="job.progress is sent at most once per WEBHOOK_PROGRESS_SECONDS.",
    )

    class Meta:
        model = Endpoint
        fields = ["owner", "url", "events", "description"]
        labels = {"url": "URL"}
        help_texts = {
            "owner": "The user whose jobs' events it receives; it counts toward their limit.",
            "url": "http:// or https://, to a public address (unless "
            "WEBHOOK_ALLOW_PRIVATE_ADDRESSES is on).",
        }

    def clean_url(self) -> str:
        url = self.cleaned_data["url"].strip()
        try:
            check_url(url)
        except RefusedAddress as refused:
            raise forms.ValidationError(str(refused)) from None
        return url

    def clean_events(self) -> list[str]:
        chosen = set(self.cleaned_data["events"])
        return [event for event in EVENT_TYPES if event in chosen]

    def clean_owner(self) -> Any:
        owner = self.cleaned_data["owner"]
        # The admin's add view runs in a transaction: the owner's row stays locked
        # until the endpoint is saved, so an operator and the owner adding at once
        # cannot both take the last place.
        try:
            endpoints.check_room(owner.pk)
        except endpoints.TooManyEndpoints as refused:
            raise forms.ValidationError(
                f"{owner.get_username()} has {refused.limit} endpoints already, "
                "the most a user may have."
            ) from None
        return owner


class EnabledFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "enabled"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "On"), ("no", "Turned off")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> QuerySet[Endpoint]:
        if self.value() == "yes":
            return queryset.filter(disabled_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(disabled_at__isnull=False)
        return queryset


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ["list_url", "owner", "event_list", "state", "failing_since", "created_at"]
    list_filter = [EnabledFilter, ("owner", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["owner"]
    search_fields = ["url", "owner__username"]
    ordering = ["-created_at"]
    autocomplete_fields = ["owner"]
    add_fieldsets = [
        (
            None,
            {
                "fields": ["owner", "url", "events", "description"],
                "description": "A signing secret is made for it and not shown here: its owner "
                "gets one of their own with POST webhooks/{id}/rotate-secret.",
            },
        )
    ]
    # Every field a page shows is named here: never `secret` or `previous_secret`.
    view_fieldsets = [
        (
            None,
            {
                "fields": [
                    "full_url",
                    "owner",
                    "event_list",
                    "description",
                    ("state", "disabled_at"),
                    "failing_since",
                    "old_secret_until",
                    ("created_at", "updated_at"),
                ]
            },
        ),
        ("Recent deliveries", {"fields": ["recent_deliveries"]}),
    ]
    readonly_fields = ["full_url", "event_list", "state", "old_secret_until", "recent_deliveries"]

    # --- permissions: add, look, and turn off or on; never edit ---------------------

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # View-only: see the module's docstring.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting is the owner's (DELETE webhooks/{id}); an operator turns it off.
        return False

    def has_switch_permission(self, request: HttpRequest) -> bool:
        """Who may turn endpoints off and on: those Django would let change one."""
        # Django's own test, which this read-only admin's has_change_permission turns off.
        return super().has_change_permission(request)

    def get_fieldsets(self, request: HttpRequest, obj: Endpoint | None = None) -> Any:
        return self.add_fieldsets if obj is None else self.view_fieldsets

    def get_form(
        self, request: HttpRequest, obj: Endpoint | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = EndpointAddForm
        return super().get_form(request, obj, change, **kwargs)

    # --- what the list and the page show -----------------------------------------------

    @admin.display(description="URL", ordering="url")
    def list_url(self, endpoint: Endpoint) -> SafeString:
        return _wrapped_url(endpoint.url)

    @admin.display(description="URL")
    def full_url(self, endpoint: Endpoint) -> SafeString:
        return format_html('<span class="webhook-url">{}</span>', endpoint.url)

    @admin.display(description="Old secret signs until")
    def old_secret_until(self, endpoint: Endpoint) -> str:
        # After a rotation the secret before still signs beside the new one, until then.
        expires = endpoint.previous_secret_expires_at
        if not endpoint.previous_secret or expires is None or expires <= timezone.now():
            return "-"
        return _when(expires)

    @admin.display(description="Events")
    def event_list(self, endpoint: Endpoint) -> str:
        if set(endpoint.events) >= set(EVENT_TYPES):
            return "All"
        return ", ".join(endpoint.events) or "—"

    @admin.display(description="State", ordering="disabled_at")
    def state(self, endpoint: Endpoint) -> SafeString:
        if endpoint.enabled:
            return format_html('<span class="webhook-on">{}</span>', "On")
        return format_html(
            '<span class="webhook-off">Off</span> <span class="webhook-reason">{}</span>',
            endpoint.disabled_reason or "(no reason given)",
        )

    @admin.display(description="Newest deliveries")
    def recent_deliveries(self, endpoint: Endpoint) -> SafeString:
        newest = endpoint.deliveries.order_by("-created_at", "-pk")
        deliveries = list(newest[:RECENT_DELIVERIES])
        total = newest.count() if len(deliveries) == RECENT_DELIVERIES else len(deliveries)
        all_url = (
            reverse("admin:webhooks_delivery_changelist") + f"?endpoint__id__exact={endpoint.pk}"
        )
        return render_to_string(
            "admin/webhooks/endpoint/recent_deliveries.html",
            {
                "deliveries": [_delivery_row(delivery) for delivery in deliveries],
                "total": total,
                "all_url": all_url,
            },
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Endpoint | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context["subtitle"] = _named(obj)
        if obj is not None and self.has_switch_permission(request):
            if obj.enabled:
                context["webhook_buttons"] = [Button("Turn off", self._url("turn_off", obj.pk))]
            else:
                context["webhook_buttons"] = [
                    Button("Turn back on", self._url("turn_on", obj.pk), "default")
                ]
        return super().render_change_form(request, context, add, change, form_url, obj)

    def response_add(
        self, request: HttpRequest, obj: Endpoint, post_url_continue: str | None = None
    ) -> HttpResponse:
        if "_popup" in request.POST:
            return super().response_add(request, obj, post_url_continue)
        owner = obj.owner.get_username()
        self.message_user(
            request,
            f"The endpoint {_named(obj)} was added for {owner}. Its signing secret is not shown "
            f"here, so no one but {owner} will know it: {owner} gets it with "
            f"POST /api/video-creation/webhooks/{obj.pk}/rotate-secret.",
            messages.SUCCESS,
        )
        if "_addanother" in request.POST:
            return HttpResponseRedirect(request.path)
        return HttpResponseRedirect(self._url("change", obj.pk))

    # --- the views behind the buttons ------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        views: list[tuple[str, str, Callable[..., HttpResponseBase]]] = [
            ("turn-off/", "turn_off", self.turn_off_view),
            ("turn-on/", "turn_on", self.turn_on_view),
        ]
        ours = [
            path(
                f"<uuid:endpoint_id>/{route}",
                self.admin_site.admin_view(view),
                name=f"{self.opts.app_label}_{self.opts.model_name}_{name}",
            )
            for route, name, view in views
        ]
        return [*ours, *super().get_urls()]

    def _url(self, name: str, endpoint_id: Any) -> str:
        opts = self.opts
        return reverse(
            f"admin:{opts.app_label}_{opts.model_name}_{name}", args=[quote(endpoint_id)]
        )

    def turn_off_view(self, request: HttpRequest, endpoint_id: Any) -> HttpResponseBase:
        return self._switch_view(request, endpoint_id, _turn_off, "Turned off.", "turned off")

    def turn_on_view(self, request: HttpRequest, endpoint_id: Any) -> HttpResponseBase:
        return self._switch_view(request, endpoint_id, _turn_on, "Turned back on.", "turned on")

    def _switch_view(
        self,
        request: HttpRequest,
        endpoint_id: Any,
        switch: Callable[[Endpoint], str | None],
        history: str,
        done: str,
    ) -> HttpResponseBase:
        """Turn one endpoint off or on; say how it went, and record a change."""
        if refused := _post_only(request):
            return refused
        if not self.has_switch_permission(request):
            raise PermissionDenied
        endpoint = Endpoint.objects.filter(pk=endpoint_id).first()
        if endpoint is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, str(endpoint_id))
        with transaction.atomic():
            outcome = switch(endpoint)
            if outcome is not None:
                self.log_change(request, endpoint, history)
        if outcome is None:
            self.message_user(
                request, f"The endpoint {_named(endpoint)} was already {done}.", messages.INFO
            )
        else:
            self.message_user(request, outcome, messages.SUCCESS)
        return HttpResponseRedirect(self._url("change", endpoint.pk))


def _turn_off(endpoint: Endpoint) -> str | None:
    """As the owner's PATCH {"enabled": false}: its waiting messages stop. None if already off."""
    given_up = endpoints.turn_off(endpoint.pk, endpoints.TURNED_OFF_BY_OPERATOR)
    if given_up is None:
        return None
    waiting = f"{given_up} waiting message{'' if given_up == 1 else 's'}"
    return (
        f"The endpoint {_named(endpoint)} is turned off; {waiting} will not be sent "
        "(each can be sent again by hand once it is back on)."
    )


def _turn_on(endpoint: Endpoint) -> str | None:
    """As the owner's PATCH {"enabled": true}: the failures before are history. None if on."""
    if not endpoints.turn_on(endpoint.pk):
        return None
    return f"The endpoint {_named(endpoint)} is on again; new events will be sent to it."


# --- deliveries ----------------------------------------------------------------------------


def _next_attempt(delivery: Delivery) -> datetime | None:
    # A delivered or failed message keeps its last schedule; only a pending one has a next.
    return delivery.next_attempt_at if delivery.state == DeliveryState.PENDING else None


def _delivery_row(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.pk,
        "url": reverse("admin:webhooks_delivery_change", args=[quote(delivery.pk)]),
        "type": delivery.event_type,
        "state": delivery.state,
        "state_label": delivery.get_state_display(),
        "attempts": delivery.attempts,
        "next_attempt_at": _next_attempt(delivery),
        "created_at": delivery.created_at,
    }


class ValueFilter(admin.SimpleListFilter):
    """A filter on a choices field that lists the values (`job.failed`), not the long labels."""

    values: list[str]

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(value, value) for value in self.values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> QuerySet[Delivery]:
        if self.value() in self.values:
            return queryset.filter(**{self.parameter_name: self.value()})
        return queryset


class StateFilter(ValueFilter):
    title = "state"
    parameter_name = "state"
    values = DeliveryState.values


class TypeFilter(ValueFilter):
    title = "type"
    parameter_name = "event_type"
    values = EventType.values


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "endpoint_url", "event", "project_id", "state_value"]
    list_display += ["attempts", "next_attempt", "created_at", "delivered_at"]
    list_filter = [StateFilter, TypeFilter]
    search_fields = ["=id", "endpoint__url", "endpoint__owner__username"]
    ordering = ["-created_at", "-pk"]
    actions = ["send_again"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "endpoint_link",
                    "event",
                    "project_link",
                    "state_value",
                    ("attempts", "next_attempt"),
                    ("created_at", "delivered_at"),
                    ("sent_at", "attempting_until"),
                ]
            },
        ),
        ("Body", {"fields": ["pretty_body"]}),
        ("Attempts", {"fields": ["attempt_table"]}),
    ]
    readonly_fields = ["endpoint_link", "event", "project_link", "state_value", "next_attempt"]
    readonly_fields += ["pretty_body", "attempt_table"]

    # A record: never added, edited or deleted by hand; "Send again" goes through the outbox.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_resend_permission(self, request: HttpRequest) -> bool:
        """Who may send a message again: those Django would let change one."""
        # Django's own test, which this read-only admin's has_change_permission turns off.
        return super().has_change_permission(request)

    # --- what the list and the page show -----------------------------------------------

    @admin.display(description="Endpoint URL", ordering="endpoint__url")
    def endpoint_url(self, delivery: Delivery) -> SafeString:
        return _wrapped_url(delivery.endpoint.url, DELIVERY_LIST_URL_CHARS)

    @admin.display(description="Type", ordering="event_type")
    def event(self, delivery: Delivery) -> SafeString:
        return format_html(
            '<span title="{}">{}</span>', delivery.get_event_type_display(), delivery.event_type
        )

    @admin.display(description="State", ordering="state")
    def state_value(self, delivery: Delivery) -> SafeString:
        return format_html(
            '<span class="delivery-{}" title="{}">{}</span>',
            delivery.state,
            delivery.get_state_display(),
            delivery.state,
        )

    @admin.display(description="Next attempt", ordering="next_attempt_at")
    def next_attempt(self, delivery: Delivery) -> str:
        return _when(_next_attempt(delivery))

    @admin.display(description="Endpoint")
    def endpoint_link(self, delivery: Delivery) -> SafeString:
        endpoint = delivery.endpoint
        return format_html(
            '<a href="{}">{}</a> of {} ({})',
            reverse("admin:webhooks_endpoint_change", args=[quote(endpoint.pk)]),
            Truncator(endpoint.url).chars(LIST_URL_CHARS),
            endpoint.owner.get_username(),
            "on" if endpoint.enabled else "turned off",
        )

    @admin.display(description="Project")
    def project_link(self, delivery: Delivery) -> SafeString | str:
        if delivery.project_id is None:
            return "—"
        project = VideoProject.objects.filter(pk=delivery.project_id).only("title").first()
        if project is None:
            return f"{delivery.project_id} (deleted)"
        return format_html(
            '<a href="{}">{}</a> ({})',
            reverse("admin:projects_videoproject_change", args=[quote(project.pk)]),
            project.title,
            project.pk,
        )

    @admin.display(description="Body, as every attempt sends it")
    def pretty_body(self, delivery: Delivery) -> SafeString:
        try:
            shown = json.dumps(json.loads(delivery.body), ensure_ascii=False, indent=2)
        except ValueError:
            shown = delivery.body  # not ours to fix: show what is sent
        return format_html('<pre class="webhook-body">{}</pre>', shown)

    @admin.display(description="Every attempt")
    def attempt_table(self, delivery: Delivery) -> SafeString:
        attempts = delivery.attempt_set.order_by("number")
        return render_to_string(
            "admin/webhooks/delivery/attempts.html",
            {
                "attempts": [
                    {
                        "attempt": attempt,
                        "response": Truncator(attempt.response_body).chars(RESPONSE_PREVIEW_CHARS),
                    }
                    for attempt in attempts
                ]
            },
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        return super().get_queryset(request).select_related("endpoint__owner")

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Delivery | None = None,
    ) -> HttpResponse:
        if obj is not None and self.has_resend_permission(request):
            if obj.endpoint.enabled:
                send = Button("Send again", self._url("send_again", obj.pk), "default")
                context["webhook_buttons"] = [send]
            else:
                context["webhook_note"] = ENDPOINT_OFF
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- Send again: the button and the action ---------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_send_again"
        ours = [
            path(
                "<str:delivery_id>/send-again/",
                self.admin_site.admin_view(self.send_again_view),
                name=name,
            )
        ]
        return [*ours, *super().get_urls()]

    def _url(self, name: str, delivery_id: Any) -> str:
        opts = self.opts
        # Quoted as the admin's own links are: its `unquote` would read `msg_22…` as `msg"…`.
        return reverse(
            f"admin:{opts.app_label}_{opts.model_name}_{name}", args=[quote(delivery_id)]
        )

    def send_again_view(self, request: HttpRequest, delivery_id: str) -> HttpResponseBase:
        if refused := _post_only(request):
            return refused
        if not self.has_resend_permission(request):
            raise PermissionDenied
        delivery = Delivery.objects.filter(pk=unquote(delivery_id)).first()
        if delivery is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, delivery_id)
        if self._send_again(request, delivery):
            self.message_user(
                request,
                f"The message {delivery.pk} is being sent again, with the same id and body.",
                messages.SUCCESS,
            )
        else:
            self.message_user(
                request, f"{delivery.pk} was not sent: {ENDPOINT_OFF}", messages.WARNING
            )
        return HttpResponseRedirect(self._url("change", delivery.pk))

    @admin.action(description="Send again", permissions=["resend"])
    def send_again(self, request: HttpRequest, deliveries: QuerySet[Delivery]) -> None:
        sent = 0
        for delivery in deliveries:
            if self._send_again(request, delivery):
                sent += 1
            else:
                self.message_user(
                    request, f"{delivery.pk} was not sent: {ENDPOINT_OFF}", messages.WARNING
                )
        noun = "message is" if sent == 1 else "messages are"
        self.message_user(request, f"{sent} {noun} being sent again.", messages.SUCCESS)

    def _send_again(self, request: HttpRequest, delivery: Delivery) -> bool:
        """Resend one message and record it; False if its endpoint is turned off."""
        with transaction.atomic():
            try:
                endpoints.resend(delivery)
            except endpoints.EndpointOff:
                return False
            self.log_change(request, delivery, "Sent again by hand.")
        return True
