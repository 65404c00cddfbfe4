"""`webhooks`: a user's endpoints, their messages and every attempt, under /api/video-creation/.

One thin view per operation: validate, call the work, shape the answer. The
secret is in the answer only when it is made (create, rotate).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Prefetch
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework import status as http
from rest_framework.exceptions import APIException, NotFound
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response

from projects.api.serializers import PLAIN_CODE, ErrorSerializer, StrictSerializer, plain
from webhooks import endpoints
from webhooks.addresses import RefusedAddress, check_url
from webhooks.models import EVENT_TYPES, Attempt, Delivery, DeliveryState, Endpoint

ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid input; nothing was changed."),
    401: OpenApiResponse(ErrorSerializer, description="Not signed in."),
    404: OpenApiResponse(ErrorSerializer, description="No such endpoint of yours."),
}
EVENTS_SENTENCE = f"Events must be a list of {', '.join(EVENT_TYPES)}."
URL_SENTENCE = "The address must be an http:// or https:// URL of at most 2,000 characters."


class EndpointInputSerializer(StrictSerializer):
    url = serializers.CharField(
        max_length=2000,
        label="Address",
        error_messages=plain(
            dict.fromkeys(("required", "blank", "null", "invalid", "max_length"), URL_SENTENCE)
        ),
    )
    events = serializers.MultipleChoiceField(
        choices=EVENT_TYPES,
        required=False,
        label="Events",
        error_messages=plain(
            dict.fromkeys(("invalid_choice", "not_a_list", "empty", "null"), EVENTS_SENTENCE)
        ),
    )
    description = serializers.CharField(
        max_length=200, required=False, allow_blank=True, label="Description"
    )
    enabled = serializers.BooleanField(required=False, label="Enabled")

    def validate_url(self, url: str) -> str:
        try:
            check_url(url.strip())
        except RefusedAddress as refused:
            raise serializers.ValidationError(str(refused), code=PLAIN_CODE) from None
        return url.strip()

    def validate_events(self, events: set[str]) -> list[str]:
        if not events:
            raise serializers.ValidationError(EVENTS_SENTENCE)
        return [event for event in EVENT_TYPES if event in events]


class EndpointSerializer(serializers.Serializer):
    """Describes `Endpoint.to_dict()`."""

    id = serializers.UUIDField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPES))
    description = serializers.CharField(allow_blank=True)
    enabled = serializers.BooleanField()
    disabledAt = serializers.DateTimeField(allow_null=True)
    disabledReason = serializers.CharField(allow_blank=True)
    failingSince = serializers.DateTimeField(allow_null=True)
    previousSecretExpiresAt = serializers.DateTimeField(allow_null=True)
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()


class EndpointWithSecretSerializer(EndpointSerializer):
    secret = serializers.CharField(help_text="`whsec_…`: shown only now; keep it.")


class AttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    startedAt = serializers.DateTimeField()
    durationMs = serializers.IntegerField()
    statusCode = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    responseBody = serializers.CharField(allow_blank=True)
    byHand = serializers.BooleanField()


class DeliverySerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The `webhook-id` every attempt sends.")
    endpointId = serializers.UUIDField()
    type = serializers.ChoiceField(choices=EVENT_TYPES)
    projectId = serializers.UUIDField(allow_null=True)
    state = serializers.ChoiceField(choices=DeliveryState.choices)
    attemptCount = serializers.IntegerField()
    nextAttemptAt = serializers.DateTimeField(allow_null=True)
    createdAt = serializers.DateTimeField()
    deliveredAt = serializers.DateTimeField(allow_null=True)
    attempts = AttemptSerializer(many=True)


class EndpointOff(APIException):
    status_code = 409
    default_detail = "Turn the endpoint back on before sending to it again."
    default_code = "conflict"


class NoBody(serializers.Serializer):
    """An action without a body: the browsable API shows a button."""


class DeliveriesPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "pageSize"
    max_page_size = 100


def owned_endpoint(request: Request, endpoint_id: Any) -> Endpoint:
    endpoint = Endpoint.objects.filter(pk=endpoint_id, owner=request.user).first()
    if endpoint is None:
        raise NotFound("No such webhook endpoint of yours.")
    return endpoint


def endpoint_body(request: Request, endpoint: Endpoint, **extra: Any) -> dict[str, Any]:
    links = {
        "self": request.build_absolute_uri(reverse("webhook", args=[endpoint.pk])),
        "deliveries": request.build_absolute_uri(reverse("webhook-deliveries", args=[endpoint.pk])),
        "rotateSecret": request.build_absolute_uri(reverse("webhook-rotate", args=[endpoint.pk])),
    }
    return endpoint.to_dict() | extra | {"links": links}


class EndpointsView(GenericAPIView):
    serializer_class = EndpointInputSerializer

    @extend_schema(
        operation_id="list_webhooks",
        summary="Your webhook endpoints",
        responses={200: EndpointSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        return Response([endpoint_body(request, endpoint) for endpoint in self.get_queryset()])

    def get_queryset(self) -> Any:
        return Endpoint.objects.filter(owner=self.request.user)

    @extend_schema(
        operation_id="create_webhook",
        summary="Register an endpoint; its secret is in this answer only",
        request=EndpointInputSerializer,
        responses={201: EndpointWithSecretSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        given = self.get_serializer(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            endpoint = endpoints.create(request.user.pk, **given.validated_data)
        except endpoints.TooManyEndpoints as refused:
            raise serializers.ValidationError(
                f"You have {refused.limit} endpoints already; delete one before adding another."
            ) from None
        location = request.build_absolute_uri(reverse("webhook", args=[endpoint.pk]))
        return Response(
            endpoint_body(request, endpoint, secret=endpoint.secret),
            status=http.HTTP_201_CREATED,
            headers={"Location": location},
        )


class EndpointView(GenericAPIView):
    serializer_class = EndpointInputSerializer

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["partial"] = True  # a PATCH of only what changes
        return super().get_serializer(*args, **kwargs)

    @extend_schema(operation_id="get_webhook", responses={200: EndpointSerializer, **ERRORS})
    def get(self, request: Request, endpoint_id: Any) -> Response:
        return Response(endpoint_body(request, owned_endpoint(request, endpoint_id)))

    @extend_schema(
        operation_id="edit_webhook",
        summary="Change the address, the events or the description; turn it off or back on",
        request=EndpointInputSerializer(partial=True),
        responses={200: EndpointSerializer, **ERRORS},
    )
    def patch(self, request: Request, endpoint_id: Any) -> Response:
        endpoint = owned_endpoint(request, endpoint_id)
        given = self.get_serializer(data=request.data)
        given.is_valid(raise_exception=True)
        changes = dict(given.validated_data)
        enabled = changes.pop("enabled", None)
        with transaction.atomic():
            endpoint = endpoints.edit(endpoint, changes)
            if enabled is True:
                endpoints.turn_on(endpoint.pk)
            elif enabled is False:
                endpoints.turn_off(endpoint.pk, endpoints.TURNED_OFF_BY_OWNER)
            endpoint.refresh_from_db()
        return Response(endpoint_body(request, endpoint))

    @extend_schema(
        operation_id="delete_webhook",
        summary="Delete the endpoint with its messages; nothing more is sent to it",
        responses={204: None, **ERRORS},
    )
    def delete(self, request: Request, endpoint_id: Any) -> Response:
        owned_endpoint(request, endpoint_id).delete()
        return Response(status=http.HTTP_204_NO_CONTENT)


class RotateSecretView(GenericAPIView):
    serializer_class = NoBody

    @extend_schema(
        operation_id="rotate_webhook_secret",
        summary="A new secret (in this answer only); the old one still signs for a grace period",
        request=None,
        responses={200: EndpointWithSecretSerializer, **ERRORS},
    )
    def post(self, request: Request, endpoint_id: Any) -> Response:
        endpoint = endpoints.rotate_secret(owned_endpoint(request, endpoint_id))
        return Response(endpoint_body(request, endpoint, secret=endpoint.secret))


class DeliveriesView(GenericAPIView):
    pagination_class = DeliveriesPagination

    @extend_schema(
        operation_id="list_webhook_deliveries",
        summary="The endpoint's messages, newest first, each with every attempt",
        responses={200: DeliverySerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, endpoint_id: Any) -> Response:
        endpoint = owned_endpoint(request, endpoint_id)
        attempts = Prefetch("attempt_set", queryset=Attempt.objects.order_by("number"))
        deliveries = endpoint.deliveries.order_by("-created_at", "-pk").prefetch_related(attempts)
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(
            [delivery.to_dict(list(delivery.attempt_set.all())) for delivery in page]
        )


class ResendView(GenericAPIView):
    serializer_class = NoBody

    @extend_schema(
        operation_id="resend_webhook_delivery",
        summary="Send the message again now, with the same id and body",
        request=None,
        responses={
            202: DeliverySerializer,
            **ERRORS,
            409: OpenApiResponse(ErrorSerializer, description="The endpoint is turned off."),
        },
    )
    def post(self, request: Request, endpoint_id: Any, delivery_id: str) -> Response:
        endpoint = owned_endpoint(request, endpoint_id)
        delivery = Delivery.objects.filter(pk=delivery_id, endpoint=endpoint).first()
        if delivery is None:
            raise NotFound("No such message of this endpoint.")
        try:
            delivery = endpoints.resend(delivery)
        except endpoints.EndpointOff:
            raise EndpointOff() from None
        return Response(delivery.to_dict(list(delivery.attempt_set.all())), status=202)
