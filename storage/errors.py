"""Errors raised by the store.

StoreError            anything the store refuses or cannot do
├── NotFound          an id or name that does not exist
├── Forbidden         the item exists but belongs to someone else
├── AlreadyVoted      a second vote on something that takes one
├── InvalidValue      a value outside what the column accepts
└── StorageUnavailable  the database cannot take writes now: disk full, read-only, I/O
"""


class StoreError(Exception):
    """Base class for everything the store refuses."""


class NotFound(StoreError):
    """No row with that id or name."""


class Forbidden(StoreError):
    """The row exists but the caller may not touch it."""


class AlreadyVoted(StoreError):
    """The item accepts one vote and already has it."""


class InvalidValue(StoreError):
    """A value the schema does not accept."""


class StorageUnavailable(StoreError):
    """SQLite could not write: the disk is full, the file or its filesystem is read-only,
    or an I/O error. Nothing of the failed write was stored; later writes succeed once
    the cause is gone."""
