"""Storage: the only package that speaks SQL.

Everything the app and the trainer remember — users, conversations, answers with
the model version that produced them, feedback, battles, model versions and
training runs — goes through `Store`. Nothing here imports torch, `app` or
`trainer`.
"""

from storage.errors import (
    AlreadyVoted,
    Forbidden,
    InvalidValue,
    NotFound,
    StorageUnavailable,
    StoreError,
)
from storage.records import (
    Battle,
    Conversation,
    Feedback,
    Message,
    ModelVersion,
    TrainingRun,
    User,
)
from storage.store import Store

__all__ = [
    "AlreadyVoted",
    "Battle",
    "Conversation",
    "Feedback",
    "Forbidden",
    "InvalidValue",
    "Message",
    "ModelVersion",
    "NotFound",
    "StorageUnavailable",
    "Store",
    "StoreError",
    "TrainingRun",
    "User",
]
