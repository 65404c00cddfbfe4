from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

KEYWORDS = (b"token", b"bearer")


def token_key(authorization: bytes) -> str | None:
    """The key in `Token <key>` or `Bearer <key>`; None when the header names no token.

    OpenAI clients send `Bearer`; a token never travels in a URL.
    """
    words = authorization.split()
    if not words or words[0].lower() not in KEYWORDS:
        return None
    if len(words) != 2:
        raise AuthenticationFailed("The Authorization header must be 'Token <key>'.")
    try:
        return words[1].decode()
    except UnicodeError:
        raise AuthenticationFailed("The token contains characters a token never has.") from None


def user_for_token(key: str) -> Any:
    """The active user a token belongs to, as DRF's TokenAuthentication finds it."""
    user, _ = TokenAuthentication().authenticate_credentials(key)
    return user


def token_user(request: HttpRequest) -> Any | None:
    """The user the request's `Token`/`Bearer` header names; None when it names no token.

    For plain Django views (the async streams, the OpenAI-compatible endpoint);
    raises `AuthenticationFailed` for a token that is wrong or malformed.
    """
    key = token_key(request.headers.get("Authorization", "").encode("latin-1"))
    return None if key is None else user_for_token(key)


class TokenOrBearerAuthentication(TokenAuthentication):
    """DRF's token authentication, under either keyword: `Token <key>` or `Bearer <key>`."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        key = token_key(get_authorization_header(request))
        return None if key is None else self.authenticate_credentials(key)
