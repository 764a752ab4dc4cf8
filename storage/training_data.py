"""What the trainer reads to build datasets: judgments joined with the answers they judged.

A mixin of `Store` (see store.py for connections), kept in its own file because it is
its own concept: read-only views over feedback, battles and conversations shaped for
turning votes into training examples, plus the whole-table dump behind `export --format
raw`. Every row carries the user, the conversation and the model version, so an example
built from it can be traced back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storage.errors import NotFound
from storage.records import Message, _Row

if TYPE_CHECKING:
    from sqlite_utils import Database

TRAINING_FEEDBACK_KINDS = ("thumb", "edit", "retry")
SIGNAL_OUTCOMES = ("a", "b", "both_bad")
"""Battle outcomes that add training signal (a tie adds none: it is not trained on)."""


@dataclass(frozen=True)
class AnswerFeedback(_Row):
    """One thumb, edit or retry together with the answer it is about."""

    feedback_id: int
    kind: str  # thumb | edit | retry
    value: int | None  # thumbs: 1 or -1
    text: str | None  # edits: the corrected answer
    user_id: int
    user_flagged: int
    created_at: str
    message_id: int
    conversation_id: int
    parent_id: int | None
    content: str
    version: str | None


@dataclass(frozen=True)
class BattleVote(_Row):
    """One voted battle with the text and version of both answers."""

    battle_id: int
    user_id: int
    user_flagged: int
    outcome: str  # a | b | tie | both_bad
    prompt_message_id: int
    conversation_id: int  # the prompt message's conversation
    message_a_id: int
    content_a: str
    version_a: str
    message_b_id: int
    content_b: str
    version_b: str
    voted_at: str


@dataclass(frozen=True)
class UserJudgments(_Row):
    """How many judgments (battle votes, thumbs, edits, retries) one user has made."""

    user_id: int
    kind: str
    name: str | None
    is_flagged: int
    battle_votes: int
    feedback: int

    @property
    def total(self) -> int:
        return self.battle_votes + self.feedback


class TrainingData:
    # provided by Store
    _one: Any
    db: Database

    def answer_feedback(
        self, kinds: Iterable[str] = TRAINING_FEEDBACK_KINDS
    ) -> list[AnswerFeedback]:
        """Feedback of the given kinds on answers, oldest first, with answer and user flag."""
        kinds = tuple(kinds)
        if not kinds:
            return []
        rows = self.db.query(
            "SELECT f.id AS feedback_id, f.kind, f.value, f.text, f.user_id,"
            " u.is_flagged AS user_flagged, f.created_at, m.id AS message_id,"
            " m.conversation_id, m.parent_id, m.content, v.name AS version"
            " FROM feedback f"
            " JOIN messages m ON m.id = f.message_id"
            " JOIN users u ON u.id = f.user_id"
            " LEFT JOIN model_versions v ON v.id = m.model_version_id"
            f" WHERE f.kind IN ({', '.join('?' * len(kinds))})"
            " ORDER BY f.id",
            kinds,
        )
        return [AnswerFeedback.from_row(r) for r in rows]

    def battle_votes(self) -> list[BattleVote]:
        """Every voted battle, oldest first, with both answers' text and version."""
        rows = self.db.query(
            "SELECT b.id AS battle_id, b.user_id, u.is_flagged AS user_flagged, b.outcome,"
            " b.prompt_message_id, p.conversation_id,"
            " b.message_a_id, ma.content AS content_a, va.name AS version_a,"
            " b.message_b_id, mb.content AS content_b, vb.name AS version_b, b.voted_at"
            " FROM battles b"
            " JOIN users u ON u.id = b.user_id"
            " JOIN messages p ON p.id = b.prompt_message_id"
            " JOIN messages ma ON ma.id = b.message_a_id"
            " JOIN messages mb ON mb.id = b.message_b_id"
            " JOIN model_versions va ON va.id = b.version_a_id"
            " JOIN model_versions vb ON vb.id = b.version_b_id"
            " WHERE b.outcome IS NOT NULL"
            " ORDER BY b.id"
        )
        return [BattleVote.from_row(r) for r in rows]

    def judgments_per_user(
        self, kinds: Iterable[str] = TRAINING_FEEDBACK_KINDS
    ) -> list[UserJudgments]:
        """Every user who has judged anything, most judgments first: who the training
        data would come from, before any per-user cap."""
        kinds = tuple(kinds) or ("",)
        # one pass over each table (grouped), not a subquery per user
        rows = self.db.query(
            "SELECT u.id AS user_id, u.kind, u.name, u.is_flagged,"
            " COALESCE(b.n, 0) AS battle_votes, COALESCE(f.n, 0) AS feedback"
            " FROM users u"
            " LEFT JOIN (SELECT user_id, COUNT(*) AS n FROM battles"
            "  WHERE outcome IS NOT NULL GROUP BY user_id) b ON b.user_id = u.id"
            " LEFT JOIN (SELECT user_id, COUNT(*) AS n FROM feedback"
            f"  WHERE kind IN ({', '.join('?' * len(kinds))}) GROUP BY user_id) f"
            "  ON f.user_id = u.id"
            " WHERE COALESCE(b.n, 0) + COALESCE(f.n, 0) > 0"
            " ORDER BY COALESCE(b.n, 0) + COALESCE(f.n, 0) DESC, u.id",
            kinds,
        )
        return [UserJudgments.from_row(r) for r in rows]

    def new_signal_judgments(self) -> int:
        """Judgments that add training signal made since the last cycle that trained
        started: battle votes for A, B or both bad, thumbs, corrections and retries, from
        users not flagged. Ties and flags add nothing to train on and are not counted; a
        thumb changed since counts again."""
        row = self._one(
            "SELECT started_at FROM training_runs WHERE kind = 'cycle' AND status = 'succeeded'"
            " ORDER BY id DESC LIMIT 1"
        )
        since = row["started_at"] if row else ""
        kinds, outcomes = TRAINING_FEEDBACK_KINDS, SIGNAL_OUTCOMES
        counted = self._one(
            "SELECT (SELECT count(*) FROM feedback f JOIN users u ON u.id = f.user_id"
            f"  WHERE u.is_flagged = 0 AND f.kind IN ({', '.join('?' * len(kinds))})"
            "  AND f.created_at > ?)"
            " + (SELECT count(*) FROM battles b JOIN users u ON u.id = b.user_id"
            f"  WHERE u.is_flagged = 0 AND b.outcome IN ({', '.join('?' * len(outcomes))})"
            "  AND b.voted_at > ?) AS n",
            (*kinds, since, *outcomes, since),
        )
        return int(counted["n"]) if counted else 0

    def messages_of_conversations(
        self, conversation_ids: Iterable[int]
    ) -> dict[int, list[Message]]:
        """{conversation id: its messages in id order} for the given conversations."""
        ids = sorted(set(conversation_ids))
        found: dict[int, list[Message]] = {i: [] for i in ids}
        for start in range(0, len(ids), 500):  # stay under SQLite's variable limit
            chunk = ids[start : start + 500]
            rows = self.db.query(
                f"SELECT * FROM messages WHERE conversation_id IN ({', '.join('?' * len(chunk))})"
                " ORDER BY id",
                chunk,
            )
            for row in rows:
                found[row["conversation_id"]].append(Message.from_row(row))
        return found

    def data_tables(self) -> list[str]:
        """The application's tables (not SQLite's or the migration bookkeeping), by name."""
        return sorted(t for t in self.db.table_names() if not t.startswith(("_", "sqlite_")))

    def table_rows(self, table: str) -> Iterator[dict[str, Any]]:
        """Every row of one application table in rowid order, as plain dicts."""
        if table not in self.data_tables():
            raise NotFound(f"no table {table!r}")
        yield from self.db.query(f"SELECT * FROM [{table}] ORDER BY rowid")
