"""A durable message queue in SQLite with SQS semantics: visibility timeouts, receive counts,
delays and a dead-letter queue."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from sdcore.adapters.local.db import Database
from sdcore.adapters.local.doorbell import Listener, ring
from sdcore.ports import Message, Queue


class SqliteQueue(Queue):
    def __init__(
        self,
        db: Database,
        name: str,
        max_receives: int = 5,
        dead_letter: str | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.name = name
        self.max_receives = max_receives
        self.dead_letter = dead_letter if dead_letter is not None else f"{name}:dlq"
        self.now = now

    def dead_letters(self) -> SqliteQueue:
        """The queue this one's dead letters go to (SQS: the redrive target)."""
        return SqliteQueue(self.db, self.dead_letter, now=self.now)

    def send(self, body: dict[str, Any], delay_s: float = 0, priority: int = 0) -> str:
        message_id = uuid.uuid4().hex
        now = self.now()
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO messages (id, queue, body, visible_at, sent_at, priority)"
                " VALUES (?,?,?,?,?,?)",
                (message_id, self.name, json.dumps(body), now + delay_s, now, priority),
            )
        if delay_s <= 0:
            self.ring()  # its consumer takes it now, not at its next poll
        return message_id

    @property
    def bell(self) -> str:
        return f"queue:{self.name}"

    def ring(self) -> None:
        """Wake this queue's consumers (see adapters/local/doorbell.py)."""
        ring(self.db.path.parent, self.bell)

    def listener(self) -> Listener:
        """A consumer's wake-up: rung when a message is sent without delay or woken."""
        return Listener(self.db.path.parent, self.bell)

    def receive(self, max_messages: int = 10, visibility_s: float = 30) -> list[Message]:
        now = self.now()
        out: list[Message] = []
        with self.db.write() as conn:
            rows = conn.execute(
                "SELECT id, body, receive_count FROM messages WHERE queue=? AND visible_at<=?"
                " ORDER BY priority DESC, visible_at LIMIT ?",
                (self.name, now, max_messages),
            ).fetchall()
            for message_id, body, count in rows:
                if count >= self.max_receives:
                    # SQS's redrive: a message received max_receives times moves to the DLQ
                    conn.execute(
                        "UPDATE messages SET queue=?, visible_at=?, receipt=NULL WHERE id=?",
                        (self.dead_letter, now, message_id),
                    )
                    continue
                receipt = f"{message_id}:{uuid.uuid4().hex}"
                conn.execute(
                    "UPDATE messages SET visible_at=?, receipt=?, receive_count=? WHERE id=?",
                    (now + visibility_s, receipt, count + 1, message_id),
                )
                out.append(
                    Message(
                        message_id=message_id,
                        receipt=receipt,
                        body=json.loads(body),
                        receive_count=count + 1,
                    )
                )
        return out

    def take_received(self, received_by: float, visibility_s: float) -> list[Message]:
        """Remove and return the messages received at or before `received_by` (with
        `visibility_s`) and neither deleted nor visible again: what a consumer that died then
        was holding."""
        now = self.now()
        with self.db.write() as conn:
            rows = conn.execute(
                "SELECT id, receipt, body, receive_count FROM messages WHERE queue=?"
                " AND receipt IS NOT NULL AND visible_at>? AND visible_at<=?",
                (self.name, now, received_by + visibility_s),
            ).fetchall()
            conn.executemany("DELETE FROM messages WHERE id=?", [(row[0],) for row in rows])
        return [Message(message_id=i, receipt=r, body=json.loads(b), receive_count=c)
                for i, r, b, c in rows]  # fmt: skip

    def delete(self, receipt: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM messages WHERE receipt=?", (receipt,))

    def change_visibility(self, receipt: str, visibility_s: float) -> None:
        with self.db.write() as conn:
            conn.execute(
                "UPDATE messages SET visible_at=? WHERE receipt=?",
                (self.now() + visibility_s, receipt),
            )

    def wake(self, count: int) -> int:
        now = self.now()
        with self.db.write() as conn:
            cur = conn.execute(
                "UPDATE messages SET visible_at=? WHERE id IN (SELECT id FROM messages"
                " WHERE queue=? AND visible_at>? AND receive_count=0"
                " ORDER BY priority DESC, visible_at LIMIT ?)",
                (now, self.name, now, count),
            )
            woken = cur.rowcount
        if woken:
            self.ring()
        return woken

    def depth(self) -> int:
        row = self.db.conn().execute("SELECT COUNT(*) FROM messages WHERE queue=?", (self.name,))
        return int(row.fetchone()[0])
