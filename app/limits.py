"""What one visitor can cost: sliding-window limits, and the client address they key on.

`SlidingWindow` counts events per key (a user's votes and chat answers, an address's
sign-in attempts, a name's failed sign-ins) and refuses past its limit.

`SessionLimit` bounds new identities. Every anonymous identity is a row in the store and
a fresh chat quota, so creating them is limited: at most `serving.sessions_per_address`
per client address and `serving.sessions_per_window` on the whole server within
`serving.session_window_s` (sliding windows, in memory). `POST /api/session` and the page's anonymous sign-in both
ask `SessionLimit.admit` before creating one.

The client address is the connection's, unless `serving.forwarded_header` names the
header a trusted reverse proxy sets (then its last entry, the one that proxy added).
A header nobody configured is ignored: any client could forge it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping

from app.config import ServingConfig
from app.errors import InputError

UNKNOWN_ADDRESS = "unknown"


class SlidingWindow:
    """At most `limit` events per key in any `window_s` seconds, in memory: votes and
    chat answers per user, sign-in attempts per address and per name. Keys whose events
    have all left the window are dropped, so many keys seen once cost little."""

    SWEEP_AT = 10_000  # keys held before a sweep drops the stale ones

    def __init__(
        self, limit: int, window_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._times: dict[Hashable, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: Hashable) -> deque[float] | None:
        times = self._times.get(key)
        if times is None:
            return None
        cutoff = self._clock() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._times[key]
            return None
        return times

    def full(self, key: Hashable) -> bool:
        with self._lock:
            times = self._recent(key)
            return times is not None and len(times) >= self.limit

    def hit(self, key: Hashable, n: int = 1) -> bool:
        """Count `n` events for `key` now (a battle is two answers), unless they would go
        over the limit (then False, and nothing is counted)."""
        with self._lock:
            times = self._recent(key)
            if (len(times) if times is not None else 0) + n > self.limit:
                return False
            if len(self._times) >= self.SWEEP_AT:
                for stale in list(self._times):
                    self._recent(stale)
            self._times.setdefault(key, deque()).extend([self._clock()] * n)
            return True


def client_address(headers: Mapping[str, str], peer: str | None, forwarded_header: str = "") -> str:
    """The address a request came from: the configured proxy header's last entry when
    set and present, else the connection's peer."""
    if forwarded_header:
        value = headers.get(forwarded_header.lower()) or headers.get(forwarded_header)
        if value:
            last = value.split(",")[-1].strip()
            if last:
                return last
    return peer or UNKNOWN_ADDRESS


class SessionLimit:
    """At most `per_address` new identities per address and `in_all` on the server in any
    `window_s` seconds."""

    def __init__(
        self,
        per_address: int,
        in_all: int,
        window_s: float,
        *,
        forwarded_header: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_address = per_address
        self.in_all = in_all
        self.window_s = window_s
        self.forwarded_header = forwarded_header
        self._clock = clock
        self._all: deque[tuple[float, str]] = deque()  # (time, address), oldest first
        self._by_address: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: ServingConfig) -> SessionLimit:
        return cls(
            config.sessions_per_address,
            config.sessions_per_window,
            config.session_window_s,
            forwarded_header=config.forwarded_header,
        )

    def address(self, headers: Mapping[str, str], peer: str | None) -> str:
        return client_address(headers, peer, self.forwarded_header)

    def admit(self, address: str) -> None:
        """Count one new identity from `address`, or raise HTTP 429 (with how long to
        wait) when either limit is reached; a refusal counts nothing."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            if len(self._all) >= self.in_all:
                raise InputError(
                    429,
                    "too many new sessions on this server right now; try again later",
                    retry_after_s=self._wait(self._all[0][0], now),
                )
            times = self._by_address.get(address)
            if times is not None and len(times) >= self.per_address:
                raise InputError(
                    429,
                    f"too many new sessions from your address: at most {self.per_address} "
                    f"every {self.window_s:g} seconds; reuse the one you have",
                    retry_after_s=self._wait(times[0], now),
                )
            self._all.append((now, address))
            self._by_address.setdefault(address, deque()).append(now)

    def _expire(self, now: float) -> None:
        """Forget what left the window; an address with nothing left is dropped, so memory
        stays within `in_all` entries."""
        while self._all and self._all[0][0] <= now - self.window_s:
            _, address = self._all.popleft()
            times = self._by_address[address]
            times.popleft()
            if not times:
                del self._by_address[address]

    def _wait(self, oldest: float, now: float) -> float:
        return max(1.0, math.ceil(oldest + self.window_s - now))
