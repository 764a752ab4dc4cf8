"""The thread-safe store: per-thread connections, one writer, WAL, foreign keys on.

Gradio handlers, FastAPI handlers and the scheduler each run on their own threads,
and sqlite3 connections refuse to cross threads, so every thread gets its own
connection. Writes take one process-wide lock and run inside `BEGIN IMMEDIATE`, so
a write never has to upgrade a read transaction (which fails under WAL when another
process, such as the training worker, committed in between). A write returns only
after its transaction has committed: that is what makes an acknowledged vote durable.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from storage.battles import Battles
from storage.errors import AlreadyVoted, Forbidden, InvalidValue, NotFound, StorageUnavailable
from storage.migrations import migrations
from storage.records import Battle, Conversation, Feedback, Message, User
from storage.runs import VersionsAndRuns, utcnow
from storage.training_data import TrainingData

THUMB_VALUES = (1, -1)
FEEDBACK_KINDS = ("thumb", "edit", "retry", "flag")
BATTLE_OUTCOMES = ("a", "b", "tie", "both_bad")


# SQLite's primary result codes that mean "the storage refused", not "the SQL was wrong":
# SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN
_UNAVAILABLE_CODES = {8: "read-only", 10: "I/O error", 13: "disk full", 14: "cannot open"}


@contextmanager
def _unavailable_as_error() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        reason = _UNAVAILABLE_CODES.get(code & 0xFF) if code is not None else None
        if reason is None:
            raise
        raise StorageUnavailable(
            f"the database cannot store anything right now ({reason}: {exc}); "
            "nothing was saved, try again later"
        ) from exc


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.rollback()
    except sqlite3.Error:
        pass  # on a failing disk the rollback may fail too; SQLite undoes it on reopen


class Store(VersionsAndRuns, TrainingData, Battles):
    """All reads and writes of the application's SQLite database."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._connections: list[sqlite3.Connection] = []
        with self._write_lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            migrations.apply(self.db)
        self._ensure_base_version()

    # -- connections -------------------------------------------------------------

    @property
    def db(self) -> Database:
        """This thread's connection, opened on first use."""
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            db = Database(conn)
            self._local.db = db
            with self._write_lock:
                self._connections.append(conn)
        return db

    def close(self) -> None:
        """Close every thread's connection (call once, at shutdown)."""
        with self._write_lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass  # owned by a thread that has ended; closing is best effort
            self._connections.clear()
        self._local = threading.local()

    @contextmanager
    def _write(self) -> Iterator[Database]:
        """One write transaction; commits before returning, rolls back on error. A write
        the disk refuses raises `StorageUnavailable` (the transaction is rolled back)."""
        with self._write_lock, _unavailable_as_error():
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                _rollback(db.conn)
                raise
            try:
                db.conn.commit()
            except BaseException:
                _rollback(db.conn)
                raise

    def _one(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> dict[str, Any] | None:
        rows = list(self.db.query(sql, params))
        return rows[0] if rows else None

    def _insert(self, db: Database, table: str, row: dict[str, Any]) -> int:
        cursor = db.execute(
            f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
        return int(cursor.lastrowid)

    # -- users -------------------------------------------------------------------

    def create_user(self, kind: str = "anon", name: str | None = None) -> User:
        with self._write() as db:
            user_id = self._insert(
                db, "users", {"kind": kind, "name": name, "created_at": utcnow()}
            )
        return self.get_user(user_id)

    def named_user(self, kind: str, name: str) -> User:
        """The signed-in user called `name` (`password` or `oauth`), created on first sign-in."""
        if kind not in ("password", "oauth") or not name:
            raise InvalidValue("a named user is a 'password' or 'oauth' user with a name")
        with self._write() as db:
            rows = list(
                db.query(
                    "SELECT id FROM users WHERE kind = ? AND name = ? ORDER BY id LIMIT 1",
                    (kind, name),
                )
            )
            if rows:
                user_id = rows[0]["id"]
            else:
                user_id = self._insert(
                    db, "users", {"kind": kind, "name": name, "created_at": utcnow()}
                )
        return self.get_user(user_id)

    def get_user(self, user_id: int) -> User:
        row = self._one("SELECT * FROM users WHERE id = ?", (user_id,))
        if row is None:
            raise NotFound(f"no user {user_id}")
        return User.from_row(row)

    def set_user_flagged(self, user_id: int, flagged: bool = True) -> None:
        """Mark a user as abusive: their feedback is left out of training sets."""
        self.get_user(user_id)
        with self._write() as db:
            db.execute("UPDATE users SET is_flagged = ? WHERE id = ?", (int(flagged), user_id))

    def revoke_tokens(self, user_id: int) -> int:
        """Void every token issued to this user so far; returns the new token version."""
        self.get_user(user_id)
        with self._write() as db:
            db.execute(
                "UPDATE users SET token_version = token_version + 1 WHERE id = ?", (user_id,)
            )
        return self.get_user(user_id).token_version

    def set_credential_fingerprint(self, user_id: int, fingerprint: str | None) -> bool:
        """Record a password user's credential fingerprint; when it differs from the one
        stored (a changed or removed password), revoke their tokens too. True if it did."""
        with self._write() as db:
            rows = list(
                db.query("SELECT credential_fingerprint FROM users WHERE id = ?", (user_id,))
            )
            if not rows:
                raise NotFound(f"no user {user_id}")
            if rows[0]["credential_fingerprint"] == fingerprint:
                return False
            db.execute(
                "UPDATE users SET credential_fingerprint = ?, token_version = token_version + 1"
                " WHERE id = ?",
                (fingerprint, user_id),
            )
        return True

    def users(self, *, kind: str | None = None, flagged: bool | None = None) -> list[User]:
        """Users in id order, optionally of one kind or only (un)flagged ones."""
        where, params = [], []
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if flagged is not None:
            where.append("is_flagged = ?")
            params.append(int(flagged))
        sql = "SELECT * FROM users" + (" WHERE " + " AND ".join(where) if where else "")
        return [User.from_row(r) for r in self.db.query(sql + " ORDER BY id", params)]

    # -- conversations and messages ----------------------------------------------

    def create_conversation(self, user_id: int, title: str | None = None) -> Conversation:
        with self._write() as db:
            conv_id = self._insert(
                db,
                "conversations",
                {"user_id": user_id, "created_at": utcnow(), "title": title},
            )
        return self.get_conversation(conv_id)

    def get_conversation(self, conversation_id: int) -> Conversation:
        row = self._one("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        if row is None:
            raise NotFound(f"no conversation {conversation_id}")
        return Conversation.from_row(row)

    def owned_conversation(self, conversation_id: int, user_id: int) -> Conversation:
        """The conversation, if it belongs to `user_id`; `Forbidden` otherwise."""
        conversation = self.get_conversation(conversation_id)
        if conversation.user_id != user_id:
            raise Forbidden(f"conversation {conversation_id} belongs to another user")
        return conversation

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        parent_id: int | None = None,
        version: str | None = None,
        sampling: dict[str, Any] | None = None,
        latency_ms: int | None = None,
        n_tokens: int | None = None,
    ) -> Message:
        """Store one message; an assistant answer names the model version that wrote it."""
        if role == "assistant" and version is None:
            raise InvalidValue("an assistant message must record its model version")
        version_id = self.get_version(version).id if version is not None else None
        with self._write() as db:
            message_id = self._insert(
                db,
                "messages",
                {
                    "conversation_id": conversation_id,
                    "parent_id": parent_id,
                    "role": role,
                    "content": content,
                    "model_version_id": version_id,
                    "sampling_json": json.dumps(sampling) if sampling else None,
                    "created_at": utcnow(),
                    "latency_ms": latency_ms,
                    "n_tokens": n_tokens,
                },
            )
        return self.get_message(message_id)

    def get_message(self, message_id: int) -> Message:
        row = self._one("SELECT * FROM messages WHERE id = ?", (message_id,))
        if row is None:
            raise NotFound(f"no message {message_id}")
        return Message.from_row(row)

    def conversation_messages(self, conversation_id: int) -> list[Message]:
        rows = self.db.query(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
        )
        return [Message.from_row(r) for r in rows]

    def message_version_name(self, message_id: int) -> str | None:
        row = self._one(
            "SELECT v.name FROM messages m JOIN model_versions v ON v.id = m.model_version_id"
            " WHERE m.id = ?",
            (message_id,),
        )
        return row["name"] if row else None

    def owned_message(self, message_id: int, user_id: int) -> Message:
        """The message, if it is in one of `user_id`'s conversations."""
        message = self.get_message(message_id)
        self.owned_conversation(message.conversation_id, user_id)
        return message

    # -- feedback ----------------------------------------------------------------

    def set_thumb(self, message_id: int, user_id: int, value: int | None) -> Feedback | None:
        """Record a thumb (1 or -1) on an answer, replacing this user's earlier one.

        `value=None` clears it. Returns the stored feedback, or None when cleared.
        """
        if value is not None and value not in THUMB_VALUES:
            raise InvalidValue(f"a thumb is 1 or -1, not {value!r}")
        self._require_answer(message_id)
        with self._write() as db:
            db.execute(
                "DELETE FROM feedback WHERE message_id = ? AND user_id = ? AND kind = 'thumb'",
                (message_id, user_id),
            )
            if value is None:
                return None
            feedback_id = self._insert(
                db,
                "feedback",
                {
                    "message_id": message_id,
                    "user_id": user_id,
                    "kind": "thumb",
                    "value": value,
                    "created_at": utcnow(),
                },
            )
        return self.get_feedback(feedback_id)

    def add_feedback(
        self,
        message_id: int,
        user_id: int,
        kind: str,
        *,
        value: int | None = None,
        text: str | None = None,
    ) -> Feedback:
        """Record an edit (correction), retry or flag on an answer. Thumbs: `set_thumb`."""
        if kind == "thumb":
            feedback = self.set_thumb(message_id, user_id, value)
            assert feedback is not None
            return feedback
        if kind not in FEEDBACK_KINDS:
            raise InvalidValue(f"feedback kind must be one of {FEEDBACK_KINDS}, not {kind!r}")
        if kind == "edit" and not (text and text.strip()):
            raise InvalidValue("a correction needs the corrected text")
        self._require_answer(message_id)
        with self._write() as db:
            feedback_id = self._insert(
                db,
                "feedback",
                {
                    "message_id": message_id,
                    "user_id": user_id,
                    "kind": kind,
                    "value": value,
                    "text": text,
                    "created_at": utcnow(),
                },
            )
        return self.get_feedback(feedback_id)

    def get_feedback(self, feedback_id: int) -> Feedback:
        row = self._one("SELECT * FROM feedback WHERE id = ?", (feedback_id,))
        if row is None:
            raise NotFound(f"no feedback {feedback_id}")
        return Feedback.from_row(row)

    def message_feedback(self, message_id: int) -> list[Feedback]:
        rows = self.db.query(
            "SELECT * FROM feedback WHERE message_id = ? ORDER BY id", (message_id,)
        )
        return [Feedback.from_row(r) for r in rows]

    def _require_answer(self, message_id: int) -> Message:
        message = self.get_message(message_id)
        if message.role != "assistant":
            raise InvalidValue(f"message {message_id} is not an answer; feedback is on answers")
        return message

    # -- battles -----------------------------------------------------------------

    def create_battle(
        self,
        user_id: int,
        prompt_message_id: int,
        message_a_id: int,
        message_b_id: int,
        *,
        pairing: str,
    ) -> Battle:
        """Record a blind battle between two stored answers to the same prompt.

        The versions are read from the answers themselves, so they cannot disagree.
        """
        a, b = self.get_message(message_a_id), self.get_message(message_b_id)
        if a.model_version_id is None or b.model_version_id is None:
            raise InvalidValue("both sides of a battle must be answers with a model version")
        with self._write() as db:
            battle_id = self._insert(
                db,
                "battles",
                {
                    "user_id": user_id,
                    "prompt_message_id": prompt_message_id,
                    "message_a_id": message_a_id,
                    "message_b_id": message_b_id,
                    "version_a_id": a.model_version_id,
                    "version_b_id": b.model_version_id,
                    "pairing": pairing,
                    "created_at": utcnow(),
                },
            )
        return self.get_battle(battle_id)

    def get_battle(self, battle_id: int) -> Battle:
        row = self._one("SELECT * FROM battles WHERE id = ?", (battle_id,))
        if row is None:
            raise NotFound(f"no battle {battle_id}")
        return Battle.from_row(row)

    def vote_battle(self, battle_id: int, user_id: int, outcome: str) -> Battle:
        """Record the one vote a battle takes; returns only after it has committed."""
        if outcome not in BATTLE_OUTCOMES:
            raise InvalidValue(f"outcome must be one of {BATTLE_OUTCOMES}, not {outcome!r}")
        with self._write() as db:
            row = list(db.query("SELECT user_id, outcome FROM battles WHERE id = ?", (battle_id,)))
            if not row:
                raise NotFound(f"no battle {battle_id}")
            if row[0]["user_id"] != user_id:
                raise Forbidden(f"battle {battle_id} belongs to another user")
            if row[0]["outcome"] is not None:
                raise AlreadyVoted(f"battle {battle_id} already has a vote")
            db.execute(
                "UPDATE battles SET outcome = ?, voted_at = ? WHERE id = ?",
                (outcome, utcnow(), battle_id),
            )
        return self.get_battle(battle_id)

    def voted_battles(self) -> list[Battle]:
        rows = self.db.query("SELECT * FROM battles WHERE outcome IS NOT NULL ORDER BY id")
        return [Battle.from_row(r) for r in rows]

    def count(self, table: str) -> int:
        """Row count of one of the store's tables (for health pages and tests)."""
        if table not in self.db.table_names():
            raise NotFound(f"no table {table!r}")
        return self.db[table].count
