"""The web process's config sections, one dataclass per component, each field
documented and validated in `__post_init__` with a message that names the setting to
change. The trainer's sections live beside the trainer (`trainer/*config.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MIN_SECRET_CHARS = 32  # auth.session_secret and auth.admin_token


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range; the message says which."""


@dataclass
class StorageConfig:
    """Where the app keeps its database, models and adapters."""

    data_dir: Path = Path("data")
    """Holds chat.db, models/base/, adapters/<version>/, reward/<version>/, runs/<id>/."""

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser()

    @property
    def db_path(self) -> Path:
        return self.data_dir / "chat.db"


@dataclass
class ServingConfig:
    """The web process and how it generates answers."""

    host: str = "127.0.0.1"
    port: int = 7860
    backend: str = "local"
    """`local` (transformers + peft in this process), `remote` (a TGI or vLLM server at
    `remote_url`) or `scripted` (canned answers, for UI tests)."""

    remote_url: str = ""
    """The model server's base URL for `backend = "remote"`, e.g. `http://127.0.0.1:8080`."""

    remote_kind: str = "tgi"
    """`tgi` (adapters fixed at the server's start) or `vllm` (adapters loaded at run time)."""

    remote_base_model: str = ""
    """The `model` name that asks the server for the base model. Empty: `tgi` on TGI, the
    first model `/v1/models` lists on vLLM."""

    remote_adapters: list[str] = field(default_factory=list)
    """TGI only: the `LORA_ADAPTERS` the server was started with (`v3=/data/adapters/v3,...`);
    a version outside it is refused rather than silently served by the base model."""

    remote_data_dir: str = ""
    """The data directory as the model server sees it (e.g. `/data` when mounted there in
    its container); adapter paths are sent under it. Empty: the same paths as here."""

    remote_token: str = ""
    """Bearer token for the model server (`--api-key`); empty: none is sent."""

    remote_timeout_s: float = 60.0
    """How long to wait for the model server before telling the user it is not answering."""

    temperature: float = 0.7
    """Default sampling temperature. SmolLM2-135M turns incoherent near 1.0."""

    max_new_tokens: int = 256
    """Default answer length limit, in tokens."""

    max_new_tokens_limit: int = 1024
    """The most a request may ask for; larger requests are refused with 400."""

    max_message_chars: int = 4000
    """The longest message a user may send; longer ones are refused (HTTP 413)."""

    max_messages: int = 64
    """The most turns one request may carry."""

    max_batch_size: int = 16
    """Concurrent chats generated together in one batch (peft serves mixed adapters in one
    batch). 16: a battle is two answers, so eight voters at once fill one batch."""

    version_poll_seconds: float = 2.0
    """How often the server checks the store for a newly promoted version (hot swap)."""

    chats_per_window: int = 60
    """The most chat answers (and retries) one user may ask for within `chat_window_s`;
    more get HTTP 429."""

    chat_window_s: float = 60.0
    """The sliding window of the chat rate limit, in seconds. A battle counts as two answers."""

    max_prompt_tokens: int = 2048
    """The longest prompt a model is given: past it the oldest turns are left out (the
    system turn and the last user turn are always kept), so one long history cannot slow
    everyone's batch. The local backend counts with its tokenizer; the remote backend
    estimates (characters / 3, plus 4 per turn)."""

    max_queue: int = 32
    """The most answers waiting or being generated at once; past it chats and battles get
    HTTP 503 with `Retry-After` (the page says the server is busy)."""

    page_queue_size: int = 64
    """The most events the page's queue holds (Gradio's `queue(max_size=...)`); past it the
    page says the application is busy."""

    max_upload_bytes: int = 1_000_000
    """The largest file the page's upload route takes (Gradio's `max_file_size`); the page
    has no upload field, so this only bounds what a script could send."""

    sessions_per_address: int = 100
    """The most new identities (`POST /api/session`, the page's anonymous sign-in) one
    client address may create within `session_window_s`; more get HTTP 429."""

    sessions_per_window: int = 600
    """The most new identities the whole server creates within `session_window_s`."""

    session_window_s: float = 600.0
    """The sliding window of the new-identity limits, in seconds."""

    forwarded_header: str = ""
    """Behind a reverse proxy: the header that carries the client's address, set by that
    proxy (e.g. `X-Forwarded-For`; its last entry is used). Empty: the address of the
    connection, and any such header is ignored (a client could forge it)."""

    def __post_init__(self) -> None:
        if self.backend not in ("local", "remote", "scripted"):
            raise ConfigError(
                f"serving.backend must be 'local', 'remote' or 'scripted', not {self.backend!r}"
            )
        if self.remote_kind not in ("tgi", "vllm"):
            raise ConfigError(
                f"serving.remote_kind must be 'tgi' or 'vllm', not {self.remote_kind!r}"
            )
        if self.backend == "remote" and not self.remote_url.startswith(("http://", "https://")):
            raise ConfigError(
                "serving.backend = 'remote' needs serving.remote_url, the model server's "
                "http(s):// URL (--remote-url or RLHF_CHAT_SERVING_REMOTE_URL)"
            )
        if not self.remote_timeout_s > 0:
            raise ConfigError("serving.remote_timeout_s must be more than 0 seconds")
        for name in ("chat_window_s", "session_window_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"serving.{name} must be more than 0 seconds")
        if not 0 < self.port < 65536:
            raise ConfigError(f"serving.port must be between 1 and 65535, not {self.port}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(f"serving.temperature must be within [0, 2], not {self.temperature}")
        if not 1 <= self.max_new_tokens <= self.max_new_tokens_limit:
            raise ConfigError(
                "serving.max_new_tokens must be at least 1 and at most serving.max_new_tokens_limit"
            )
        for name in (
            "max_message_chars",
            "max_messages",
            "max_batch_size",
            "chats_per_window",
            "max_prompt_tokens",
            "max_queue",
            "page_queue_size",
            "max_upload_bytes",
            "sessions_per_address",
            "sessions_per_window",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"serving.{name} must be at least 1")


@dataclass
class AuthConfig:
    """Identities: anonymous browser sessions and the admin credential."""

    session_secret: str = ""
    """The key that signs user tokens, so identities survive restarts; at least
    32 characters. It never reaches the page. Empty: one is generated and kept in the data
    directory (file `user_token_key`). Changing it signs everyone out."""

    admin_token: str = ""
    """Bearer token for admin actions (train now, promote, roll back, user moderation); at
    least 32 characters. Empty: admin off (unless `admin_users`)."""

    user_token_days: float = 30.0
    """How long a user token is valid after it was issued (the page renews its token on
    each visit)."""

    admin_user_token_days: float = 1.0
    """The same for the tokens of `admin_users`: shorter, since they can act as admins."""

    login_attempts_per_window: int = 20
    """Sign-in attempts (`POST /api/login` and the page's form) one address may make
    within `login_window_s`; more get HTTP 429 without checking the password."""

    login_failures_per_name: int = 5
    """Failed sign-ins for one name within `login_window_s`, from any address; then that
    name is refused with HTTP 429 until the window has passed."""

    login_window_s: float = 300.0
    """The sliding window of the sign-in limits, in seconds."""

    password_users: list[str] = field(default_factory=list)
    """`name:password` or `name:scrypt$...` (from `app.auth.hash_password`) entries. Set:
    the page asks for a password, `POST /api/login` gives a token, anonymous sessions end."""

    admin_users: list[str] = field(default_factory=list)
    """Names of signed-in users (password users, or Hugging Face usernames on a Space)
    whose user tokens may use the admin actions too."""

    space_id: str = ""
    """The Hugging Face Space this runs in, read from `SPACE_ID` when the Space offers
    OAuth (front matter `hf_oauth: true` sets `OAUTH_CLIENT_ID`). Set: the page shows
    "Sign in with Hugging Face". Empty (local runs): no button, no Hub token needed."""

    require_sign_in: bool = False
    """Refuse anonymous use: only signed-in users (Hugging Face or password) may chat and
    vote, over the page and the API. For a public Space whose votes should each be a
    known person's. Password users already imply it."""

    def __post_init__(self) -> None:
        for name in ("session_secret", "admin_token"):
            value = getattr(self, name)
            if value and len(value) < MIN_SECRET_CHARS:
                raise ConfigError(
                    f"auth.{name} is {len(value)} characters long; it must be at least "
                    f"{MIN_SECRET_CHARS} (make one with: python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))')"
                )
        for name in ("user_token_days", "admin_user_token_days", "login_window_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"auth.{name} must be more than 0")
        for name in ("login_attempts_per_window", "login_failures_per_name"):
            if getattr(self, name) < 1:
                raise ConfigError(f"auth.{name} must be at least 1")
        if self.require_sign_in and not (self.password_users or self.space_id):
            raise ConfigError(
                "auth.require_sign_in needs a way to sign in: set auth.password_users, "
                "or run on a Space with `hf_oauth: true` in the README front matter"
            )
        for entry in self.password_users:
            name, sep, secret = entry.partition(":")
            if not (sep and name.strip() and secret):
                raise ConfigError(
                    "auth.password_users entries are 'name:password' or 'name:scrypt$...'"
                )


@dataclass
class ArenaConfig:
    """Blind side-by-side battles: how the two answers are sampled and how fast one may vote."""

    temperature_a: float = 0.7
    """Temperature of one side when a battle shows two samples of the live version."""

    temperature_b: float = 0.7
    """Temperature of the other side in that case (the sides' positions are shuffled).
    Both sides sample at a coherent temperature: at 1.0 SmolLM2-135M's answers turn
    incoherent, and votes against them teach the reward model "incoherent is bad",
    a difference PPO's samples (at the serving temperature) never show."""

    votes_per_window: int = 10
    """The most votes one user may cast within `vote_window_s`; more get HTTP 429."""

    vote_window_s: float = 10.0
    """The sliding window of the vote rate limit, in seconds."""

    def __post_init__(self) -> None:
        for name in ("temperature_a", "temperature_b"):
            if not 0.0 <= getattr(self, name) <= 2.0:
                raise ConfigError(f"arena.{name} must be within [0, 2], not {getattr(self, name)}")
        if self.votes_per_window < 1:
            raise ConfigError("arena.votes_per_window must be at least 1")
        if not self.vote_window_s > 0:
            raise ConfigError("arena.vote_window_s must be more than 0 seconds")


@dataclass
class BackupConfig:
    """Online backups of the database into `<data_dir>/backups/`, optionally pushed to a
    Hub dataset repo (a Space's disk is lost on every restart)."""

    interval_minutes: float = 60.0
    """Minutes between backups (`backups/chat-<UTC time>.db`); 0 turns them off."""

    keep: int = 24
    """How many backups to keep on disk; older ones are deleted."""

    hub_repo: str = ""
    """A Hub dataset repo (`you/rlhf-chat-backups`) that receives each backup as `chat.db`
    (the repo's history keeps the older ones). Empty: local backups only."""

    hub_token: str = ""
    """A token that may write to `hub_repo`. Empty: HF_TOKEN or the saved login."""

    restore_on_start: bool = True
    """With `hub_repo` set and no database yet (a fresh Space disk), start from the
    latest backup in the repo."""

    def __post_init__(self) -> None:
        if self.interval_minutes < 0:
            raise ConfigError("backup.interval_minutes must be 0 (off) or more")
        if self.keep < 1:
            raise ConfigError("backup.keep must be at least 1")
        if self.hub_repo and self.hub_repo.count("/") != 1:
            raise ConfigError(
                f"backup.hub_repo must be a dataset repo id like 'you/backups', not {self.hub_repo!r}"
            )
