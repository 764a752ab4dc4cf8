"""A stand-in for a TGI or vLLM server, speaking the documented wire format of the
endpoints `RemoteBackend` uses, and recording what it was asked.

    GET  /health                   200 once the model is up
    GET  /info                     TGI: {"model_id", "router", "version", ...}; no adapters listed
    GET  /v1/models                {"object": "list", "data": [{"id", "object": "model", ...}]}
                                   (TGI: the base model only; vLLM: the base and each adapter)
    POST /v1/chat/completions      OpenAI chat; with "stream": true, server-sent events
                                   data: {"choices": [{"delta": {"content": ...}}]} ... data: [DONE]
    POST /v1/load_lora_adapter     vLLM: {"lora_name", "lora_path"}
    POST /v1/unload_lora_adapter   vLLM: {"lora_name"}

Like the real servers, TGI answers an adapter name it does not know with the base
model, silently, and vLLM refuses an unknown model name with 404.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class FakeModelServer:
    kind: str  # "tgi" or "vllm"
    base_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    adapters: dict[str, str] = field(default_factory=dict)  # name -> path
    requests: list[tuple[str, str, Any]] = field(default_factory=list)  # (method, path, body)
    authorizations: list[str | None] = field(default_factory=list)  # each request's header
    url: str = ""
    hold: threading.Event | None = None  # set: chats wait for it before answering

    def chats(self) -> list[dict[str, Any]]:
        return [body for method, path, body in self.requests if path == "/v1/chat/completions"]

    def posts(self, path: str) -> list[dict[str, Any]]:
        return [body for method, p, body in self.requests if method == "POST" and p == path]

    # -- answers ------------------------------------------------------------------------

    def served_by(self, model: str | None) -> str | None:
        """Which model answers a request for `model`; None: refused (vLLM only)."""
        if model in self.adapters:
            return model
        if self.kind == "tgi" or model in (None, self.base_model):
            return self.base_model  # TGI: an unknown adapter name silently gets the base
        return None

    def answer(self, body: dict[str, Any]) -> str:
        last = next(m for m in reversed(body["messages"]) if m["role"] == "user")
        return f"[{self.served_by(body.get('model'))}] You said: {last['content']}"

    def models(self) -> dict[str, Any]:
        data = [{"id": self.base_model, "object": "model", "created": 0, "owned_by": "x"}]
        if self.kind == "vllm":
            data[0].update(root=self.base_model, parent=None)
            data += [
                {"id": name, "object": "model", "created": 0, "root": path, "parent": data[0]["id"]}
                for name, path in self.adapters.items()
            ]
        return {"object": "list", "data": data}

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.base_model,
            "model_sha": None,
            "max_input_tokens": 4095,
            "max_total_tokens": 4096,
            "router": "text-generation-router",
            "version": "3.3.6",
        }


def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> str:
    payload = {
        "id": "",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "system_fingerprint": "fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return f"data: {json.dumps(payload)}\n\n"


def _handler(server: FakeModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
            raw = (body if isinstance(body, str) else json.dumps(body)).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"object": "error", "message": message, "code": status})

        def do_GET(self) -> None:
            server.authorizations.append(self.headers.get("authorization"))
            server.requests.append(("GET", self.path, None))
            if self.path == "/health":
                self._send(200, "")
            elif self.path == "/v1/models":
                self._send(200, server.models())
            elif self.path == "/info" and server.kind == "tgi":
                self._send(200, server.info())
            else:
                self._error(404, "Not Found")

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            server.authorizations.append(self.headers.get("authorization"))
            server.requests.append(("POST", self.path, body))
            if self.path == "/v1/chat/completions":
                self._chat(body)
            elif self.path == "/v1/load_lora_adapter" and server.kind == "vllm":
                name, path = body["lora_name"], body["lora_path"]
                if name in server.adapters:
                    self._error(400, f"The lora adapter '{name}' has already been loaded.")
                elif not Path(path).exists():
                    self._error(404, f"No adapter found for {path}")
                else:
                    server.adapters[name] = path
                    self._send(
                        200, f"Success: LoRA adapter '{name}' added successfully.", "text/plain"
                    )
            elif self.path == "/v1/unload_lora_adapter" and server.kind == "vllm":
                name = body["lora_name"]
                if server.adapters.pop(name, None) is None:
                    self._error(404, f"The lora adapter '{name}' cannot be found.")
                else:
                    self._send(
                        200, f"Success: LoRA adapter '{name}' removed successfully.", "text/plain"
                    )
            else:
                self._error(404, "Not Found")

        def _chat(self, body: dict[str, Any]) -> None:
            served = server.served_by(body.get("model"))
            if served is None:
                self._error(404, f"The model `{body.get('model')}` does not exist.")
                return
            if server.hold is not None:  # a busy model server: the answer waits
                server.hold.wait(timeout=120)
            words = server.answer(body).split(" ")[: body.get("max_tokens") or None]
            finish = "length" if len(words) == body.get("max_tokens") else "stop"
            if not body.get("stream"):
                text = " ".join(words)
                message = {"role": "assistant", "content": text}
                self._send(
                    200, {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
                )
                return
            events = [_chunk(served, {"role": "assistant", "content": ""}, None)]
            events += [
                _chunk(served, {"content": w if i == 0 else " " + w}, None)
                for i, w in enumerate(words)
            ]
            events += [_chunk(served, {}, finish), "data: [DONE]\n\n"]
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for event in events:
                self.wfile.write(event.encode())
                self.wfile.flush()
            self.close_connection = True

    return Handler


@contextmanager
def fake_model_server(kind: str, **kwargs: Any) -> Iterator[FakeModelServer]:
    """A fake model server on a free local port, in a thread, for the `with` block."""
    server = FakeModelServer(kind, **kwargs)
    http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    http.daemon_threads = True
    server.url = f"http://127.0.0.1:{http.server_address[1]}"
    thread = threading.Thread(target=http.serve_forever, name="fake-model-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        http.shutdown()
        http.server_close()
        thread.join(timeout=5)
