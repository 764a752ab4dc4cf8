"""Hot swap: keep the backend's loaded versions in step with the store.

The store says which version is live (a trainer in this or another process may have
promoted one); `VersionSync.sync()` makes the backend match: load what is new beside
the old, switch the live pointer (in-flight requests finish on the version they
started with), then unload what is no longer wanted. A version that fails to load
leaves the old live version serving. The watcher thread calls `sync()` on a timer;
tests call it directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from app.serving.backend import BASE_VERSION, ChatBackend
from storage import Store

log = logging.getLogger(__name__)


class VersionSync:
    def __init__(
        self,
        store: Store,
        backend: ChatBackend,
        *,
        interval_s: float = 5.0,
        before_sync: Callable[[], object] | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.interval_s = interval_s
        self.before_sync = before_sync  # e.g. judging canaries, which may promote one
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def wanted(self) -> dict[str, str | None]:
        """Versions to keep loaded: live, candidates (for canary battles) and the
        previous live one (for rollback and live-vs-previous battles)."""
        live = self.store.live_version("policy")
        keep = [live, *[v for v in self.store.versions("policy") if v.status == "candidate"]]
        previous = self.store.previous_live_version("policy")
        if previous is not None:
            keep.append(previous)
        return {v.name: v.path for v in keep}

    def sync(self) -> bool:
        """One pass; returns True when the live version changed."""
        with self._lock:
            if self.before_sync is not None:
                self.before_sync()
            live = self.store.live_version("policy").name
            wanted = self.wanted()
            loaded = set(self.backend.versions())
            for name, path in wanted.items():
                if name in loaded or name == BASE_VERSION:
                    continue
                if not path:
                    log.error("version %s has no adapter path; not loading it", name)
                    continue
                try:
                    self.backend.load(name, path)
                except Exception as exc:  # keep serving the old version
                    self.last_error = f"could not load {name}: {exc}"
                    log.exception("could not load version %s from %s", name, path)
            changed = False
            if live != self.backend.live_version and live in self.backend.versions():
                old = self.backend.live_version
                self.backend.set_live(live)
                changed = True
                log.info("live version switched from %s to %s", old, live)
            for name in set(self.backend.versions()) - set(wanted) - {BASE_VERSION}:
                if name != self.backend.live_version:
                    self.backend.unload(name)
            return changed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="version-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception:
                log.exception("version sync failed; will try again")
