"""Where each WebSocket session stands in each project's log: acks in memory, written in batches.

A WebSocket client acks the events it has processed (DESIGN.md principle 12:
a cursor moves on the client's word, never on a send). An ack costs a dict
entry. One `SessionCursors` per web process, owned by its `Bus`, writes the
cursors that moved, of all that process's sockets, every
`WS_CURSOR_FLUSH_SECONDS`, when a socket closes and when the process shuts
down: one UPDATE per `ADVANCE_CHUNK` cursors, so database writes grow with time
and subscriptions that moved, not with sockets, events or acks.

An ack waits in memory for up to one flush. A reconnect to the same process
sees it at once (`unwritten`); a process that dies without a goodbye loses at
most that last second of acks, and its clients are re-sent those events:
delivery is at least once, in order.

A stream of all of a user's projects (`GET events`, WebSocket `"*"`) keeps its
client's cursors in a `CursorMap` instead, and hands them to the client as one
token (the SSE `id` of each event): the client's word is the token it sends
back, so nothing is stored on the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from projects.models import WebSocketSubscription

logger = logging.getLogger(__name__)

# session client_id -> project id -> acked seq
Acks = dict[str, dict[str, int]]


def _write(acks: Acks) -> int:
    cursors = {
        (session, project): seq
        for session, projects in acks.items()
        for project, seq in projects.items()
    }
    try:
        return WebSocketSubscription.objects.advance_many(cursors)
    except Exception:
        close_old_connections()  # a broken connection is not reused by the next flush
        raise


class SessionCursors:
    """The acked cursors of one web process's sockets that the database does not have yet."""

    def __init__(self) -> None:
        self._pending: Acks = {}
        self._writing: Acks = {}
        self._lock = asyncio.Lock()
        self.flushes = 0  # flushes that wrote something: tests and the bench read it

    def ack(self, session_id: str, project_id: str, seq: int) -> None:
        """Record the client's word; the cursor never moves back."""
        projects = self._pending.setdefault(session_id, {})
        if seq > projects.get(project_id, -1):
            projects[project_id] = seq

    def forget(self, session_id: str, project_id: str) -> None:
        """Drop an unsubscribed project's unwritten ack: a later subscribe starts afresh."""
        projects = self._pending.get(session_id, {})
        projects.pop(project_id, None)
        if not projects:
            self._pending.pop(session_id, None)

    def unwritten(self, session_id: str) -> dict[str, int]:
        """The session's acks that may not be in the database yet, by project id.

        Read it before reading the session's rows: an ack is then either here or
        already committed when the rows are read.
        """
        acks = dict(self._writing.get(session_id, {}))
        for project, seq in self._pending.get(session_id, {}).items():
            acks[project] = max(seq, acks.get(project, -1))
        return acks

    async def flush(self) -> None:
        """Write every pending ack now; on failure keep them for the next flush."""
        async with self._lock:
            if not self._pending:
                return
            self._writing, self._pending = self._pending, {}
            try:
                await sync_to_async(_write)(self._writing)
                self.flushes += 1
            except Exception:
                logger.exception("Could not write WebSocket cursors; keeping them for the next try")
                self._keep(self._writing)
            except BaseException:
                self._keep(self._writing)  # cancelled mid-write: the shutdown flush writes them
                raise
            finally:
                self._writing = {}

    async def flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            if self._pending:  # an idle process takes no lock and touches nothing
                await self.flush()

    def _keep(self, acks: Acks) -> None:
        for session, projects in acks.items():
            for project, seq in projects.items():
                self.ack(session, project, seq)


# --- the cursors of a stream that follows many projects ----------------------------

# A token: base64url (no padding) of a format byte, then per project its id's 16
# bytes and its seq as an unsigned LEB128 varint (1 byte below 128, 2 below 16,384).
TOKEN_FORMAT = 1
MAX_SEQ = 2**63 - 1  # the database's bigint, as projects/api/serializers.py
BAD_TOKEN = "This is not a cursor this server gave out."


class CursorMap:
    """Where a client stands in each of several projects' logs: `{project id: last seq}`.

    A project it has no entry for is read from its first event: one created
    after the cursors were taken. `token()` is the whole map as a short string
    (~24 characters a project), made again only when a cursor moved: a stream
    sends it as the SSE `id` of every event, so a reconnect's `Last-Event-ID`
    resumes every project exactly where its client stands.
    """

    __slots__ = ("_entries", "_token", "seqs")

    def __init__(self, seqs: Mapping[str, int] | None = None) -> None:
        self.seqs: dict[str, int] = {}
        self._entries: dict[str, bytes] = {}
        self._token: str | None = None
        for project, seq in (seqs or {}).items():
            self.move(project, seq)

    def __contains__(self, project: str) -> bool:
        return project in self.seqs

    def __len__(self) -> int:
        return len(self.seqs)

    def get(self, project: str) -> int:
        return self.seqs.get(project, 0)

    def move(self, project: str, seq: int) -> None:
        self.seqs[project] = seq
        self._entries[project] = uuid.UUID(project).bytes + _varint(seq)
        self._token = None

    def forget(self, project: str) -> None:
        if self.seqs.pop(project, None) is not None:
            del self._entries[project]
            self._token = None

    def token(self) -> str:
        if self._token is None:
            raw = bytes([TOKEN_FORMAT]) + b"".join(self._entries.values())
            self._token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return self._token


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def decode_token(token: str) -> dict[str, int]:
    """The `{project id: seq}` of a `CursorMap.token()`; ValueError for anything else."""
    text = token.strip()
    if not _TOKEN_CHARS.fullmatch(text):
        raise ValueError(BAD_TOKEN)
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(BAD_TOKEN) from None
    if not raw or raw[0] != TOKEN_FORMAT:
        raise ValueError(BAD_TOKEN)
    seqs: dict[str, int] = {}
    at = 1
    while at < len(raw):
        if at + 17 > len(raw):
            raise ValueError(BAD_TOKEN)
        project = str(uuid.UUID(bytes=raw[at : at + 16]))
        seq, at = _read_varint(raw, at + 16)
        if project in seqs or seq > MAX_SEQ:
            raise ValueError(BAD_TOKEN)
        seqs[project] = seq
    return seqs


_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]{2,}")


def _read_varint(raw: bytes, at: int) -> tuple[int, int]:
    number = shift = 0
    while at < len(raw) and shift <= 63:
        byte = raw[at]
        number |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return number, at
        shift += 7
    raise ValueError(BAD_TOKEN)


def cursors_from(since: Any) -> dict[str, int]:
    """A client's `since` for all its projects: a token, or `{project id: seq}`; else ValueError."""
    if isinstance(since, str):
        return decode_token(since)
    if not isinstance(since, dict):
        raise ValueError("`since` is a cursor token or an object of project ids and seqs.")
    seqs: dict[str, int] = {}
    for project, seq in since.items():
        try:
            key = str(uuid.UUID(project))
        except (ValueError, TypeError, AttributeError):
            raise ValueError(f"{project!r} in `since` is not a project id.") from None
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
            raise ValueError(f"The seq of {key} in `since` is a whole number, 0 or more.")
        seqs[key] = seq
    return seqs
