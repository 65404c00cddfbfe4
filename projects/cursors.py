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
"""

from __future__ import annotations

import asyncio
import logging

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
