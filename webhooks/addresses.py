"""Where a webhook may go: public addresses only, checked when it is saved and when it connects.

A receiver's URL is chosen by a user, and the request comes from inside our
network; without this guard an endpoint at `http://169.254.169.254/` or
`http://10.0.0.5:6379/` would make our workers reach what only they can
reach. The name is resolved at connect time too (DNS can change after the
endpoint was saved) and the connection goes to the address that was checked,
not to a second lookup. Redirects are never followed (http.client does not).
`WEBHOOK_ALLOW_PRIVATE_ADDRESSES=1` lifts the guard (tests, development).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings


class RefusedAddress(Exception):
    """The URL is not one a webhook may be sent to; the message says why, for a person."""


def check_url(url: str) -> None:
    """Refuse a URL that is not http(s) to a public address (unless the setting allows it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedAddress("Use an http:// or https:// address.")
    if parts.username or parts.password:
        raise RefusedAddress("Leave the user name and password out of the address.")
    try:
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError:
        raise RefusedAddress("The port must be a number from 1 to 65535.") from None
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        public_addresses(parts.hostname, parts.port or default_port(parts.scheme))


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def public_addresses(host: str, port: int) -> list[tuple[Any, ...]]:
    """The addresses `host` resolves to, if every one is public; else RefusedAddress."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise RefusedAddress(f"The host {host} could not be found.") from None
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if not _is_public(address):
            # One private answer refuses the name: a name pointing both ways is a trick.
            raise RefusedAddress(
                f"{host} is a private, loopback or link-local address ({address}); "
                "webhooks go to public addresses only."
            )
    return found


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return address.is_global and not address.is_multicast


def _guarded_create_connection(
    address: tuple[str, int], timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT, source: Any = None
) -> socket.socket:
    """socket.create_connection, to a checked public address of the host only."""
    if settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        return socket.create_connection(address, timeout, source)
    host, port = address
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in public_addresses(host, port):
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as failed:
            sock.close()
            error = failed
    raise error or OSError(f"No address of {host} answered.")


def connection_for(url: str, timeout: float) -> http.client.HTTPConnection:
    """An HTTP(S) connection to the URL's host that connects only to public addresses.

    The name stays the host of the request (its `Host` header, TLS's server name
    and certificate check); only the socket goes to the checked address.
    """
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=timeout)
    # http.client's own hook for making the socket, used by HTTPS as well.
    connection._create_connection = _guarded_create_connection  # type: ignore[attr-defined]
    return connection
