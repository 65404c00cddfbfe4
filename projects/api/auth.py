from __future__ import annotations

from typing import Any

from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request


class TokenOrBearerAuthentication(TokenAuthentication):
    """DRF's token authentication, under either keyword: `Token <key>` or `Bearer <key>`.

    OpenAI clients send `Bearer`; a token never travels in a URL.
    """

    keywords = (b"token", b"bearer")

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        words = get_authorization_header(request).split()
        if not words or words[0].lower() not in self.keywords:
            return None
        if len(words) != 2:
            raise AuthenticationFailed("The Authorization header must be 'Token <key>'.")
        try:
            key = words[1].decode()
        except UnicodeError:
            raise AuthenticationFailed("The token contains characters a token never has.") from None
        return self.authenticate_credentials(key)
