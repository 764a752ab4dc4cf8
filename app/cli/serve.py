"""`rlhf-chat serve`: the chat page and the HTTP API."""

from __future__ import annotations

import argparse

from app.cli.common import add_common
from app.config import Config


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the chat page and the HTTP API")
    add_common(p)
    p.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 7860)")
    p.add_argument(
        "--backend", choices=["local", "remote", "scripted"], help="how answers are generated"
    )
    p.add_argument(
        "--remote-url", metavar="URL", help="the TGI or vLLM server for --backend remote"
    )
    p.add_argument("--remote-kind", choices=["tgi", "vllm"], help="what runs at --remote-url")
    p.set_defaults(
        handler=_serve,
        overrides=lambda a: {
            "serving.host": a.host,
            "serving.port": a.port,
            "serving.backend": a.backend,
            "serving.remote_url": a.remote_url,
            "serving.remote_kind": a.remote_kind,
        },
    )


def _serve(args: argparse.Namespace, config: Config) -> int:
    from app.server import serve

    serve(config)
    return 0
