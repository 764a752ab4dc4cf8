"""Schema migrations, applied in order when a store opens.

Add a new decorated function to change the schema; never edit one that has
shipped. Tables follow the data model in the design document.
"""

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("rlhf-chat")


_INITIAL_SCHEMA = (
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('anon', 'password', 'oauth')),
        name TEXT,
        created_at TEXT NOT NULL,
        is_flagged INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        created_at TEXT NOT NULL,
        title TEXT
    )
    """,
    """
    CREATE TABLE model_versions (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('policy', 'reward')),
        name TEXT NOT NULL UNIQUE,
        parent_id INTEGER REFERENCES model_versions(id),
        path TEXT,
        sha256 TEXT,
        status TEXT NOT NULL CHECK (
            status IN ('candidate', 'live', 'retired', 'rejected', 'rolled_back')),
        created_at TEXT NOT NULL,
        promoted_at TEXT,
        metrics_json TEXT
    )
    """,
    """
    -- exactly one live version per kind, enforced by the database itself
    CREATE UNIQUE INDEX model_versions_one_live ON model_versions(kind)
        WHERE status = 'live'
    """,
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id),
        parent_id INTEGER REFERENCES messages(id),
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL,
        model_version_id INTEGER REFERENCES model_versions(id),
        sampling_json TEXT,
        created_at TEXT NOT NULL,
        latency_ms INTEGER,
        n_tokens INTEGER
    )
    """,
    """
    CREATE INDEX messages_conversation ON messages(conversation_id)
    """,
    """
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id),
        user_id INTEGER NOT NULL REFERENCES users(id),
        kind TEXT NOT NULL CHECK (kind IN ('thumb', 'edit', 'retry', 'flag')),
        value INTEGER,
        text TEXT,
        created_at TEXT NOT NULL,
        CHECK (kind != 'thumb' OR value IN (1, -1))
    )
    """,
    """
    -- one thumb per (answer, user): a new click replaces the old row
    CREATE UNIQUE INDEX feedback_one_thumb ON feedback(message_id, user_id)
        WHERE kind = 'thumb'
    """,
    """
    CREATE INDEX feedback_message ON feedback(message_id)
    """,
    """
    CREATE TABLE battles (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        prompt_message_id INTEGER NOT NULL REFERENCES messages(id),
        message_a_id INTEGER NOT NULL REFERENCES messages(id),
        message_b_id INTEGER NOT NULL REFERENCES messages(id),
        version_a_id INTEGER NOT NULL REFERENCES model_versions(id),
        version_b_id INTEGER NOT NULL REFERENCES model_versions(id),
        pairing TEXT NOT NULL,
        outcome TEXT CHECK (outcome IN ('a', 'b', 'tie', 'both_bad')),
        created_at TEXT NOT NULL,
        voted_at TEXT
    )
    """,
    """
    CREATE TABLE training_runs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('cycle', 'reward', 'ppo')),
        status TEXT NOT NULL CHECK (
            status IN ('running', 'succeeded', 'failed', 'skipped')),
        started_at TEXT NOT NULL,
        finished_at TEXT,
        feedback_watermark INTEGER,
        n_examples INTEGER,
        metrics_json TEXT,
        error TEXT
    )
    """,
    """
    CREATE TABLE run_metrics (
        run_id INTEGER NOT NULL REFERENCES training_runs(id),
        step INTEGER NOT NULL,
        name TEXT NOT NULL,
        value REAL,
        PRIMARY KEY (run_id, step, name)
    )
    """,
)


@migrations()
def m001_initial(db: Database) -> None:
    # executescript() would COMMIT first and break the migration's transaction
    for statement in _INITIAL_SCHEMA:
        db.execute(statement)


@migrations()
def m002_user_tokens(db: Database) -> None:
    # token_version: a user's tokens carry it; raising it revokes every token issued before.
    # credential_fingerprint: a keyed hash of a password user's configured entry, so a
    # changed or removed password revokes that user's tokens at the next start.
    db.execute("ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE users ADD COLUMN credential_fingerprint TEXT")
