"""The WebSocket consumer at /ws/progress/ (Channels)."""

from __future__ import annotations

from typing import Any

from channels.consumer import AsyncConsumer
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser
from rest_framework.exceptions import AuthenticationFailed

from projects.api.auth import token_key, user_for_token


class TokenHeaderAuthMiddleware(BaseMiddleware):
    """`Authorization: Token <key>` on the upgrade request signs the socket in (never a URL token).

    Placed inside Channels' session middleware: a valid token wins over the
    cookie; a bad token leaves the socket anonymous, and the consumer refuses it.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        authorization = dict(scope.get("headers", [])).get(b"authorization", b"")
        try:
            key = token_key(authorization)
            if key is not None:
                scope = {**scope, "user": await user_for_token(key)}
        except AuthenticationFailed:
            scope = {**scope, "user": AnonymousUser()}
        return await super().__call__(scope, receive, send)


class ProgressConsumer(AsyncConsumer):
    """Placeholder until the protocol lands."""
