"""`RemoteBackend`: answers from an OpenAI-compatible model server, TGI or vLLM.

Chat goes through `huggingface_hub.InferenceClient(base_url=...)`, streamed
(`chat_completion(..., stream=True)`) on a thread per answer, so `stream()` returns a
`Reply` at once as `LocalBackend` does. Adapter management and health checks are
plain HTTP. A version is a LoRA adapter named after the version:

                 TGI                                     vLLM
    adapters     fixed when the server starts            loaded while it runs
                 (`LORA_ADAPTERS=v3=/data/adapters/v3`)  (`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`)
    a request    `model` = the version (base: "tgi")     `model` = the version (base: the served model)
    load()       refuses a version the server lacks      POST /v1/load_lora_adapter
    unload()     forgets it (the server keeps it)        POST /v1/unload_lora_adapter

TGI answers an adapter name it does not know with the base model, silently, and
neither its `/info` nor its `/v1/models` lists adapters. So on TGI `load` accepts a
version only when the server lists it in `/v1/models` or it is among
`serving.remote_adapters` (the `LORA_ADAPTERS` the server was started with);
otherwise it raises `BackendError` saying how to restart the server, and the version
that is live keeps serving.

Every failure reaches the user as a short `BackendError`: a server that is down,
slow or refusing is named with its URL. `health()` says what is wrong, for /healthz.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
from huggingface_hub import InferenceClient, InferenceTimeoutError
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from app.config import ServingConfig
from app.serving.backend import (
    BASE_VERSION,
    DEFAULT_PARAMS,
    BackendError,
    ChatBackend,
    Reply,
    SamplingParams,
)

try:  # huggingface_hub's own HTTP client library, whose transport errors it lets through
    from httpx2 import TransportError as HubTransportError
except ImportError:  # pragma: no cover - older huggingface_hub releases use httpx
    from httpx import TransportError as HubTransportError  # type: ignore[assignment]

log = logging.getLogger(__name__)

KINDS = ("tgi", "vllm")
TGI_BASE_MODEL = "tgi"  # TGI's name for "no adapter"


def adapter_names(entries: Iterable[str]) -> set[str]:
    """Names from `LORA_ADAPTERS`-style entries: `name=/path`, `org/adapter@rev` or `name`."""
    names = set()
    for entry in entries:
        name = entry.strip().split("=", 1)[0].split("@", 1)[0].strip()
        if name:
            names.add(name)
    return names


class RemoteBackend(ChatBackend):
    """Answers from a TGI or vLLM server at `url`, one LoRA adapter per version."""

    def __init__(
        self,
        url: str,
        kind: str = "tgi",
        *,
        base_model: str = "",
        adapters: Iterable[str] = (),
        token: str = "",
        timeout_s: float = 60.0,
        server_path: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        self.url = url.rstrip("/")
        self.kind = kind
        self.timeout_s = timeout_s
        self.declared_adapters = adapter_names(adapters)
        self._base_model = base_model or (TGI_BASE_MODEL if kind == "tgi" else "")
        self._server_path = server_path or (lambda path: path)
        # an explicit header, so the ambient HF_TOKEN is never sent to a model server
        self._headers = {"authorization": f"Bearer {token}" if token else ""}
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=self._headers)
        self._lock = threading.Lock()  # guards the name tables read by request threads

    @classmethod
    def from_config(cls, serving: ServingConfig, data_dir: Path) -> RemoteBackend:
        """The backend `serving.remote_*` describe; adapter paths under `data_dir` are sent
        as the server sees them when `serving.remote_data_dir` is set."""
        return cls(
            serving.remote_url,
            serving.remote_kind,
            base_model=serving.remote_base_model,
            adapters=serving.remote_adapters,
            token=serving.remote_token,
            timeout_s=serving.remote_timeout_s,
            server_path=path_mapper(data_dir, serving.remote_data_dir)
            if serving.remote_data_dir
            else None,
        )

    # -- answers ----------------------------------------------------------------------

    def stream(self, messages, *, version=None, params=DEFAULT_PARAMS) -> Reply:
        # no tokenizer here: the prompt bound counts characters (`ChatBackend.count_tokens`)
        messages, dropped = self.fit(messages)
        with self._lock:
            reply = self._new_reply(version)
        reply.dropped_turns = dropped
        request = [{"role": m["role"], "content": m["content"]} for m in messages]
        threading.Thread(
            target=self._answer, args=(request, params, reply), name="remote-reply", daemon=True
        ).start()
        return reply

    def _answer(self, messages: list[dict[str, Any]], params: SamplingParams, reply: Reply) -> None:
        n_chunks, usage_tokens, finish = 0, None, "stop"
        try:
            model = self.model_name(reply.version)
            with InferenceClient(
                base_url=self.url, timeout=self.timeout_s, headers=self._headers
            ) as client:
                chunks = client.chat_completion(
                    messages,
                    model=model,
                    stream=True,
                    max_tokens=params.max_new_tokens,
                    temperature=params.temperature,  # 0: greedy on both servers
                    top_p=params.top_p if params.top_p < 1.0 else None,  # TGI refuses 1.0
                )
                for chunk in chunks:
                    if reply.cancelled.is_set():
                        break  # leaving the block closes the connection: the server stops
                    if chunk.usage is not None:
                        usage_tokens = chunk.usage.completion_tokens
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    if choice.delta is not None and choice.delta.content:
                        reply._push(choice.delta.content)
                        n_chunks += 1
                    if choice.finish_reason:
                        finish = "length" if choice.finish_reason == "length" else "stop"
        except Exception as exc:
            log.warning("remote answer failed: %r", exc)
            reply._fail(BackendError(self.explain(exc)))
            return
        reply._finish(finish, usage_tokens if usage_tokens is not None else n_chunks)

    def model_name(self, version: str) -> str:
        """The `model` a request for `version` sends: the adapter's name, or the base's."""
        if version != BASE_VERSION:
            return version
        if not self._base_model:  # vLLM: its served base model, which /v1/models lists first
            models = self._models()
            base = next((m for m in models if not m.get("parent")), models[0] if models else None)
            if base is None:
                raise BackendError(f"the model server at {self.url} lists no model")
            self._base_model = str(base["id"])
        return self._base_model

    # -- versions ---------------------------------------------------------------------

    def load(self, version: str, path: str) -> None:
        """Make `version` servable; on TGI, refuse one the server was not started with."""
        if version == BASE_VERSION:
            return
        if self.kind == "vllm":
            self._vllm_load(version, self._server_path(path))
        elif version not in self.declared_adapters | self.server_adapters():
            raise BackendError(
                f"version {version} is not loaded on the TGI server at {self.url} (it would "
                "answer with the base model); restart it with "
                f"LORA_ADAPTERS={self._lora_adapters_with(version, path)} and set "
                "serving.remote_adapters to the same value"
            )
        with self._lock:
            self._loaded[version] = path
        log.info("version %s servable on the %s server at %s", version, self.kind, self.url)

    def unload(self, version: str) -> None:
        if version == BASE_VERSION:
            return
        with self._lock:
            if version == self._live:
                raise BackendError(f"cannot unload the live version {version!r}")
            self._loaded.pop(version, None)
        if self.kind == "vllm":
            response = self._post("/v1/unload_lora_adapter", {"lora_name": version})
            if response.status_code >= 400 and response.status_code != 404:  # 404: already gone
                raise BackendError(self._refusal("unload " + version, response))
        log.info("version %s unloaded from the %s server", version, self.kind)

    def set_live(self, version: str) -> None:
        with self._lock:
            self._live = self.resolve(version)

    def server_adapters(self) -> set[str]:
        """Adapter names the server lists in /v1/models (vLLM does; TGI lists only its base)."""
        return {str(m["id"]) for m in self._models() if m.get("parent")}

    def _vllm_load(self, version: str, server_path: str) -> None:
        if version in self.server_adapters():
            return  # still there from before this process started
        response = self._post(
            "/v1/load_lora_adapter", {"lora_name": version, "lora_path": server_path}
        )
        if response.status_code >= 400 and "already" not in response.text:
            raise BackendError(self._refusal(f"load {version} from {server_path}", response))

    def _lora_adapters_with(self, version: str, path: str) -> str:
        with self._lock:
            loaded = {v: p for v, p in self._loaded.items() if v != BASE_VERSION and p}
        loaded[version] = path
        return ",".join(f"{v}={self._server_path(p)}" for v, p in loaded.items())

    # -- health -----------------------------------------------------------------------

    def health(self) -> str | None:
        """None when the server answers its health check, else what is wrong."""
        if hub_constants.HF_HUB_OFFLINE:
            return _offline_message(self.url)
        try:
            response = self._http.get("/health", timeout=min(self.timeout_s, 3.0))
        except httpx.HTTPError:
            return self._not_answering()
        if response.status_code != 200:
            return f"the model server at {self.url} is not ready (/health: {response.status_code})"
        return None

    def close(self) -> None:
        self._http.close()

    # -- HTTP -------------------------------------------------------------------------

    def _models(self) -> list[dict[str, Any]]:
        try:
            response = self._http.get("/v1/models")
        except httpx.HTTPError as exc:
            raise BackendError(self._not_answering()) from exc
        if response.status_code != 200:
            raise BackendError(self._refusal("list its models", response))
        data = response.json().get("data")
        return [m for m in data if isinstance(m, dict) and "id" in m] if data else []

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        try:
            return self._http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise BackendError(self._not_answering()) from exc

    def _not_answering(self) -> str:
        return f"the model server at {self.url} is not answering; try again in a moment"

    def _refusal(self, action: str, response: httpx.Response) -> str:
        return f"the model server at {self.url} refused to {action}: {_error_text(response)}"

    def explain(self, exc: BaseException) -> str:
        """A short message for the user about why an answer failed."""
        if isinstance(exc, BackendError):
            return str(exc)
        if isinstance(exc, OfflineModeIsEnabled):
            return _offline_message(self.url)
        if isinstance(exc, InferenceTimeoutError | HubTransportError | httpx.TransportError):
            return self._not_answering()
        if isinstance(exc, HfHubHTTPError) and exc.response is not None:
            return f"the model server at {self.url} refused the request: " + _error_text(
                exc.response
            )
        return f"the model server at {self.url} failed to answer ({type(exc).__name__})"


def _offline_message(url: str) -> str:
    return (
        f"HF_HUB_OFFLINE is set, and it stops huggingface_hub from reaching any server, "
        f"the model server at {url} included: unset it for the serving process"
    )


def _error_text(response: Any) -> str:
    """The message in an OpenAI-style, vLLM-style or TGI-style error body, else the status."""
    try:
        body = response.json()
    except Exception:
        body = None
    if isinstance(body, dict):
        error = body.get("error", body.get("message"))
        if isinstance(error, dict):
            error = error.get("message")
        if error:
            return f"{response.status_code} {str(error)[:300]}"
    return f"HTTP {response.status_code}"


def path_mapper(local_root: Path, server_root: str) -> Callable[[str], str]:
    """Rewrite paths under `local_root` to the same place under `server_root` (the data
    directory as the model server sees it, e.g. mounted at /data in its container)."""
    local = Path(local_root).resolve()

    def server_path(path: str) -> str:
        try:
            relative = Path(path).resolve().relative_to(local)
        except ValueError:
            return path
        return str(PurePosixPath(server_root, *relative.parts))

    return server_path
