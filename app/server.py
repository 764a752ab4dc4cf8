"""Assembling the web process: store, backend, HTTP API and the Gradio page on one
FastAPI app, served by uvicorn."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr
from fastapi import FastAPI

from app.api import install_api
from app.arena import ArenaService
from app.arena_api import install_arena_api
from app.chat import ChatService
from app.config import Config
from app.identity import Identity, ensure_session_secret
from app.serving import BASE_VERSION, ChatBackend, LocalBackend, ScriptedBackend
from app.ui import build_demo
from storage import Store

log = logging.getLogger(__name__)


@dataclass
class App:
    """The running web process's parts, so tests and shutdown can reach them."""

    fastapi: FastAPI
    store: Store
    backend: ChatBackend
    demo: gr.Blocks

    def close(self) -> None:
        self.backend.close()
        self.store.close()


def make_backend(config: Config, store: Store) -> ChatBackend:
    """The configured backend, with every servable version loaded and the live one set."""
    if config.serving.backend == "scripted":
        backend: ChatBackend = ScriptedBackend()
    else:
        from trainer.models import resolve_base_model

        base = resolve_base_model(config.model.source, config.storage.data_dir)
        backend = LocalBackend.from_pretrained(
            base, device=config.model.device, max_batch_size=config.serving.max_batch_size
        )
    live = store.live_version("policy")
    if live.name != BASE_VERSION and live.path:
        backend.load(live.name, live.path)
    backend.set_live(live.name)
    return backend


def create_app(config: Config, *, backend: ChatBackend | None = None) -> App:
    config.storage.data_dir.mkdir(parents=True, exist_ok=True)
    config.auth.session_secret = ensure_session_secret(
        config.auth.session_secret, config.storage.data_dir
    )
    store = Store(config.storage.db_path)
    backend = backend or make_backend(config, store)
    api = FastAPI(title="rlhf-chat", docs_url="/api/docs", openapi_url="/api/openapi.json")
    service = ChatService(store, backend, config.serving)
    # FastAPI routes must exist before Gradio is mounted at "/"
    identity = Identity(config.auth.session_secret)
    install_api(api, service, identity)
    install_arena_api(api, ArenaService(service, config.arena), identity)
    demo = build_demo(backend, store, config)
    demo.queue(default_concurrency_limit=config.serving.max_batch_size)
    gr.mount_gradio_app(api, demo, path="/")
    return App(api, store, backend, demo)


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
        uvicorn.run(
            app.fastapi, host=config.serving.host, port=config.serving.port, access_log=False
        )
    finally:
        app.close()
