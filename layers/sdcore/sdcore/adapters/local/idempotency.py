"""Powertools idempotency on the local backend: the DynamoDB persistence layer's semantics on a
table of the local SQLite database (a BEGIN IMMEDIATE transaction stands in for its conditional
put).

    persistence = SqlitePersistenceLayer(db)
    @idempotent_function(data_keyword_argument="command", persistence_store=persistence, ...)
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from typing import Any

from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import (
    STATUS_CONSTANTS,
    DataRecord,
)

from sdcore.adapters.local.db import Database

logger = logging.getLogger(__name__)

# Column names follow the DynamoDB layer's default attribute names.
SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    expiration INTEGER NOT NULL,
    in_progress_expiration INTEGER,
    data TEXT,
    validation TEXT
);
CREATE INDEX IF NOT EXISTS idempotency_expiration ON idempotency (expiration);
"""
_COLUMNS = "id, status, expiration, in_progress_expiration, data, validation"


class SqlitePersistenceLayer(BasePersistenceLayer):
    """Idempotency records in the `idempotency` table of `db` (created if missing).

    A record can be replaced when it is absent, past its `expiration` (seconds), or INPROGRESS
    past its `in_progress_expiration` (milliseconds: the Lambda timeout of the call that wrote
    it), as DynamoDBPersistenceLayer's put condition allows. Expired rows are deleted on put,
    where DynamoDB would rely on TTL.
    """

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        self.db.conn().executescript(SCHEMA)

    @staticmethod
    def _row_to_record(row: tuple[Any, ...]) -> DataRecord:
        key, status, expiration, in_progress_expiration, data, validation = row
        return DataRecord(
            idempotency_key=key,
            status=status,
            expiry_timestamp=expiration,
            in_progress_expiry_timestamp=in_progress_expiration,
            response_data=data or "",
            payload_hash=validation or "",
        )

    @staticmethod
    def _select(conn: sqlite3.Connection, key: str) -> tuple[Any, ...] | None:
        sql = f"SELECT {_COLUMNS} FROM idempotency WHERE id=?"
        row: tuple[Any, ...] | None = conn.execute(sql, (key,)).fetchone()
        return row

    def _get_record(self, idempotency_key: str) -> DataRecord:
        row = self._select(self.db.conn(), idempotency_key)
        if row is None:
            raise IdempotencyItemNotFoundError
        return self._row_to_record(row)

    def _put_record(self, data_record: DataRecord) -> None:
        now = dt.datetime.now()
        now_s, now_ms = int(now.timestamp()), int(now.timestamp() * 1000)
        validation = data_record.payload_hash if self.payload_validation_enabled else None
        with self.db.write() as conn:
            conn.execute("DELETE FROM idempotency WHERE expiration < ?", (now_s,))
            row = self._select(conn, data_record.idempotency_key)
            if row is not None:
                status, in_progress_expiry = row[1], row[3]
                in_progress_expired = (
                    status == STATUS_CONSTANTS["INPROGRESS"]
                    and in_progress_expiry is not None
                    and in_progress_expiry < now_ms
                )
                if not in_progress_expired:
                    logger.debug("idempotency key %s is %s", data_record.idempotency_key, status)
                    old = self._row_to_record(row)
                    # As the DynamoDB layer does with the item its failed condition returns:
                    # a different payload is a validation error, not a replay.
                    self._validate_payload(data_payload=data_record, stored_data_record=old)
                    self._save_to_cache(data_record=old)
                    raise IdempotencyItemAlreadyExistsError(old_data_record=old)
            conn.execute(
                f"INSERT OR REPLACE INTO idempotency ({_COLUMNS}) VALUES (?,?,?,?,?,?)",
                (
                    data_record.idempotency_key,
                    data_record.status,
                    data_record.expiry_timestamp,
                    data_record.in_progress_expiry_timestamp,
                    None,
                    validation or None,
                ),
            )

    def _update_record(self, data_record: DataRecord) -> None:
        sets = "data=?, expiration=?, status=?"
        args: list[Any] = [
            data_record.response_data,
            data_record.expiry_timestamp,
            data_record.status,
        ]
        if self.payload_validation_enabled:
            sets += ", validation=?"
            args.append(data_record.payload_hash)
        with self.db.write() as conn:
            # An update of a missing record creates it, as DynamoDB's UpdateItem does.
            conn.execute(
                "INSERT OR IGNORE INTO idempotency (id, status, expiration) VALUES (?,?,?)",
                (data_record.idempotency_key, data_record.status, data_record.expiry_timestamp),
            )
            args.append(data_record.idempotency_key)
            conn.execute(f"UPDATE idempotency SET {sets} WHERE id=?", args)

    def _delete_record(self, data_record: DataRecord) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM idempotency WHERE id=?", (data_record.idempotency_key,))
