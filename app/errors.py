"""What the services refuse, said once for the page, the HTTP API and the command line.

`InputError` carries an HTTP status and a message for the user: the HTTP layer sends it
as `{"error": message}`, the page shows it as a warning, the command line prints it.
A refused request changes nothing. `check_id` and `store_errors_as_input_errors` turn a
bad id and the store's refusals into one.
"""

from __future__ import annotations

from typing import Any

from storage import Forbidden as StoreForbidden
from storage import InvalidValue as StoreInvalid
from storage import NotFound as StoreNotFound
from storage import StorageUnavailable


class InputError(Exception):
    """A request the app refuses; `status` is the HTTP code, the message is for the user."""

    def __init__(self, status: int, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s  # the API sends it as `Retry-After`


def check_id(value: Any, name: str) -> int:
    """An integer id; one outside SQLite's 64-bit range would make the lookup raise
    OverflowError (a 500), so it is refused here."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(400, f"{name} must be an integer")
    if not -(2**63) <= value < 2**63:
        raise InputError(400, f"{name} is out of range")
    return value


def store_errors_as_input_errors(exc: Exception) -> InputError:
    """Map the store's refusals onto HTTP statuses."""
    if isinstance(exc, StoreNotFound):
        return InputError(404, str(exc))
    if isinstance(exc, StoreForbidden):
        return InputError(403, str(exc))
    if isinstance(exc, StoreInvalid):
        return InputError(400, str(exc))
    if isinstance(exc, StorageUnavailable):
        return InputError(503, str(exc))
    raise exc
