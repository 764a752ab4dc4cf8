"""Assembling the web process: store, backend, services, the HTTP API (`app.http`) and
the Gradio page (`app.page`) on one FastAPI app, served by uvicorn. The only module that
imports both rooms."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
from fastapi import FastAPI

from app.arena import ArenaService
from app.auth import Accounts
from app.backup import Backups, DataDirLock, restore_from_hub
from app.chat import ChatService
from app.config import Config
from app.http.admin import install_admin_api
from app.http.arena import install_arena_api
from app.http.chat import install_chat_api
from app.http.common import install_errors, install_not_found
from app.http.sessions import install_login_limit, install_session_api
from app.identity import Identity, ensure_session_secret
from app.limits import SessionLimit
from app.page.build import build_demo
from app.page.session import page_login
from app.serving.backend import ChatBackend
from app.serving.local import LocalBackend
from app.serving.scripted import ScriptedBackend
from app.serving.swap import VersionSync
from storage import Store
from trainer.cycle import judge_canaries
from trainer.schedule import TrainingScheduler

log = logging.getLogger(__name__)


@dataclass
class App:
    """The running web process's parts, so tests and shutdown can reach them."""

    fastapi: FastAPI
    store: Store
    backend: ChatBackend
    demo: gr.Blocks
    sync: VersionSync
    scheduler: TrainingScheduler
    backups: Backups | None = None
    data_dir_lock: DataDirLock | None = None

    def close(self) -> None:
        self.scheduler.shutdown()
        self.sync.stop()
        self.backend.close()
        if self.backups is not None:
            self.backups.stop()
        self.store.close()
        if self.data_dir_lock is not None:
            self.data_dir_lock.release()


def make_backend(config: Config) -> ChatBackend:
    """The configured backend with the base model; `VersionSync` loads the adapters."""
    if config.serving.backend == "scripted":
        return ScriptedBackend()
    if config.serving.backend == "remote":
        from app.serving.remote import RemoteBackend

        return RemoteBackend.from_config(config.serving, config.storage.data_dir)
    from trainer.models import resolve_base_model

    base = resolve_base_model(config.model.source, config.storage.data_dir)
    return LocalBackend.from_pretrained(
        base, device=config.model.device, max_batch_size=config.serving.max_batch_size
    )


def _canary_judge(store: Store, config: Config) -> Callable[[], object] | None:
    if config.cycle.promotion != "canary":
        return None
    return lambda: judge_canaries(store, config.cycle)


def create_app(config: Config, *, backend: ChatBackend | None = None) -> App:
    config.storage.data_dir.mkdir(parents=True, exist_ok=True)
    config.auth.session_secret = ensure_session_secret(
        config.auth.session_secret, config.storage.data_dir
    )
    data_dir_lock = DataDirLock(config.storage.data_dir)
    data_dir_lock.acquire()  # `rlhf-chat restore` refuses while it is held
    restore_from_hub(config.backup, config.storage.db_path)  # a fresh Space disk
    store = Store(config.storage.db_path)
    backups = Backups(config.storage.db_path, config.backup)
    backups.start()
    backend = backend or make_backend(config)
    backend.configure(
        max_queue=config.serving.max_queue, max_prompt_tokens=config.serving.max_prompt_tokens
    )
    sync = VersionSync(
        store,
        backend,
        interval_s=config.serving.version_poll_seconds,
        before_sync=_canary_judge(store, config),
    )
    sync.sync()  # serve the live version from the first request on
    sync.start()
    scheduler = TrainingScheduler(config.storage.db_path, config.training(), config.schedule)
    if config.schedule.enabled:
        scheduler.start()
    api = FastAPI(title="rlhf-chat", docs_url="/api/docs", openapi_url="/api/openapi.json")
    # FastAPI routes must exist before Gradio is mounted at "/"
    accounts = Accounts(config.auth, store, fingerprint_key=config.auth.session_secret)
    revoked = accounts.sync_password_users()  # changed or removed passwords
    if revoked:
        log.info("revoked the tokens of password users %s", revoked)
    identity = Identity(config.auth.session_secret, store=store, max_age_s=accounts.token_max_age_s)
    service = ChatService(
        store, backend, config.serving, anonymous_allowed=accounts.anonymous_allowed
    )
    sessions = SessionLimit.from_config(config.serving)  # the API's and the page's, shared
    install_errors(api)
    install_session_api(api, store, identity, accounts, sessions)
    install_chat_api(api, service, identity, accounts)
    arena = ArenaService(service, config.arena)
    install_arena_api(api, arena, identity, accounts)
    install_admin_api(
        api, store, sync, scheduler, config.auth.admin_token, accounts.admin_check(identity)
    )
    install_login_limit(api, accounts, forwarded_header=config.serving.forwarded_header)
    install_not_found(api)
    demo = build_demo(
        backend,
        store,
        config,
        sync=sync,
        scheduler=scheduler,
        chat=service,
        arena=arena,
        accounts=accounts,
        identity=identity,
        sessions=sessions,
    )
    # a full queue answers 503 and the page says "This application is currently busy"
    demo.queue(
        default_concurrency_limit=config.serving.max_batch_size,
        max_size=config.serving.page_queue_size,
    )
    # password users: Gradio's own login form guards the page
    page_auth = page_login(accounts) if accounts.passwords_required else None
    gr.mount_gradio_app(
        api, demo, path="/", auth=page_auth, max_file_size=config.serving.max_upload_bytes
    )
    return App(api, store, backend, demo, sync, scheduler, backups, data_dir_lock)


def serve(config: Config) -> None:
    import uvicorn

    app = create_app(config)
    log.info(
        "serving live version %s at http://%s:%d",
        app.backend.live_version,
        config.serving.host,
        config.serving.port,
    )
    try:
        # proxy_headers off: the client address is the connection's, or the header named
        # by serving.forwarded_header (app/limits.py), never one any client may send
        uvicorn.run(
            app.fastapi,
            host=config.serving.host,
            port=config.serving.port,
            access_log=False,
            proxy_headers=False,
        )
    finally:
        app.close()
