"""`GET credits`: the caller's balance and their ledger entries, newest first, a page at a time."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from credits import ledger
from credits.models import EntryKind, LedgerEntry
from projects.api.serializers import ErrorSerializer, PageQuerySerializer


class EntriesPagination(PageNumberPagination):
    # The same query parameters and limits as `GET projects`.
    page_size = 20
    page_size_query_param = "pageSize"
    max_page_size = 100


class LedgerJobSerializer(serializers.Serializer):
    number = serializers.IntegerField(help_text="The project's job number (1, 2, …).")
    # Not an enum here: the status object already names this choice set (CurrentStepEnum).
    step = serializers.CharField(help_text="What the job did: `script` or `render`.")


class LedgerEntrySerializer(serializers.Serializer):
    """Describes `LedgerEntry.to_dict()`; the body itself comes from the model."""

    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=EntryKind.choices)
    amount = serializers.IntegerField(help_text="Signed: grants and refunds add, charges take.")
    balanceAfter = serializers.IntegerField()
    projectId = serializers.UUIDField(allow_null=True)
    job = LedgerJobSerializer(allow_null=True, help_text="The job charged or refunded, else null.")
    reason = serializers.CharField(allow_blank=True)
    createdAt = serializers.DateTimeField()


class CreditsSerializer(serializers.Serializer):
    balance = serializers.IntegerField(min_value=0)
    entries = LedgerEntrySerializer(many=True, help_text="This page of your entries, newest first.")
    count = serializers.IntegerField(help_text="All your entries, on every page.")
    next = serializers.URLField(allow_null=True, help_text="The next (older) page, or null.")
    previous = serializers.URLField(allow_null=True, help_text="The previous page, or null.")


class CreditsView(APIView):
    @extend_schema(
        operation_id="get_credits",
        summary="Your credit balance and ledger entries, newest first",
        parameters=[
            OpenApiParameter("page", int, description="The page, from 1 (or `last`)."),
            OpenApiParameter("pageSize", int, description="Entries a page, 1 to 100 (20)."),
        ],
        responses={
            200: CreditsSerializer,
            400: OpenApiResponse(ErrorSerializer, description="A bad page number."),
            401: OpenApiResponse(ErrorSerializer, description="Not signed in."),
            404: OpenApiResponse(ErrorSerializer, description="No such page."),
        },
    )
    def get(self, request: Request) -> Response:
        PageQuerySerializer(data=request.query_params).is_valid(raise_exception=True)
        # Before the entries: a first look opens the account with its signup grant.
        balance = ledger.account_for(request.user.pk).balance
        paginator = EntriesPagination()
        entries = LedgerEntry.objects.filter(account_id=request.user.pk).order_by("-id")
        page = paginator.paginate_queryset(entries, request, self)
        return Response(
            {
                "balance": balance,
                "entries": [entry.to_dict() for entry in page],
                "count": paginator.page.paginator.count,
                "next": paginator.get_next_link(),
                "previous": paginator.get_previous_link(),
            }
        )
