"""Blind battles: two anonymous answers to one prompt, one vote, versions revealed after.

Which two answers a battle shows, in this order of preference (recorded on the
battle's `pairing`):

1. `candidate_vs_live`: the newest candidate the backend has loaded against live;
2. `live_vs_previous`: live against the version that was live before it (retired),
   when the backend has it loaded;
3. `live_two_samples`: two samples of live (by default both at the serving temperature,
   `arena.temperature_a`/`temperature_b`), so even the first day yields preference
   pairs between answers of the kind PPO samples.

`choose_pairing` is the policy as a pure function; `ArenaService` starts both answers
before reading either (a batching backend generates them together), stores them as
two answers to the same user message, records the battle, and takes the one vote.
The page and the HTTP API both go through it; bad requests raise `InputError`.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from app.chat import ChatService, sampling_record
from app.config import ArenaConfig
from app.errors import InputError, check_id, store_errors_as_input_errors
from app.limits import SlidingWindow
from app.serving.backend import BackendError, Reply, SamplingParams
from storage import AlreadyVoted, Battle, Message, StoreError

OUTCOMES = ("a", "b", "tie", "both_bad")
PAIRINGS = ("candidate_vs_live", "live_vs_previous", "live_two_samples")


@dataclass(frozen=True)
class Side:
    """One answer of a battle: which version writes it, with which sampling."""

    version: str
    params: SamplingParams


@dataclass(frozen=True)
class Pairing:
    kind: str  # one of PAIRINGS
    sides: tuple[Side, Side]


def choose_pairing(
    *,
    live: str,
    candidates: Sequence[str],
    previous: str | None,
    loaded: Collection[str],
    params: SamplingParams,
    temperatures: tuple[float, float],
) -> Pairing:
    """The two sides of the next battle (before their positions are shuffled).

    `candidates` newest first; `loaded` the versions the backend can serve now.
    """
    for candidate in candidates:
        if candidate in loaded and candidate != live:
            return Pairing("candidate_vs_live", (Side(candidate, params), Side(live, params)))
    if previous is not None and previous != live and previous in loaded:
        return Pairing("live_vs_previous", (Side(live, params), Side(previous, params)))
    t_a, t_b = temperatures
    return Pairing(
        "live_two_samples",
        (
            Side(live, replace(params, temperature=t_a)),
            Side(live, replace(params, temperature=t_b)),
        ),
    )


@dataclass
class BattleSide:
    version: str  # never shown before the vote
    params: SamplingParams
    reply: Reply
    text: str = ""


@dataclass
class BattleTurn:
    """A battle on its way: stream `deltas()`, then `ArenaService.finish` stores it."""

    user_id: int
    conversation_id: int
    prompt: Message
    pairing: str
    sides: tuple[BattleSide, BattleSide]  # in display order: A, B

    def deltas(self) -> Iterator[tuple[int, str]]:
        """(side index, text delta) as both answers stream, read concurrently."""
        for i, delta in merge_replies([side.reply for side in self.sides]):
            self.sides[i].text += delta
            yield i, delta


@dataclass(frozen=True)
class Reveal:
    """What a vote returns: the versions behind A and B."""

    battle_id: int
    outcome: str
    version_a: str
    version_b: str
    pairing: str


_END = object()


def merge_replies(replies: Sequence[Reply]) -> Iterator[tuple[int, str]]:
    """Deltas of several replies as they arrive, each tagged with its reply's index.

    One small thread per reply forwards its deltas; a failure of any reply is raised
    here after the other replies are told to stop.
    """
    events: queue.Queue[tuple[int, Any]] = queue.Queue()

    def forward(i: int, reply: Reply) -> None:
        try:
            for delta in reply:
                events.put((i, delta))
        except BackendError as exc:
            events.put((i, exc))
            return
        events.put((i, _END))

    for i, reply in enumerate(replies):
        threading.Thread(
            target=forward, args=(i, reply), name=f"battle-side-{i}", daemon=True
        ).start()
    running = len(replies)
    try:
        while running:
            i, item = events.get()
            if item is _END:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for reply in replies:
            reply.cancel()  # no effect on a finished reply; stops the other after a failure


class ArenaService:
    def __init__(
        self,
        chat: ChatService,
        config: ArenaConfig,
        *,
        rng: random.Random | None = None,
        limiter: SlidingWindow | None = None,
    ) -> None:
        self.chat = chat
        self.store = chat.store
        self.backend = chat.backend
        self.config = config
        self.rng = rng or random.Random()
        self.limiter = limiter or SlidingWindow(config.votes_per_window, config.vote_window_s)

    def pairing(self, params: SamplingParams) -> Pairing:
        """The policy applied to what the store and the backend say now."""
        previous = self.store.previous_live_version()
        return choose_pairing(
            live=self.backend.live_version,
            candidates=[v.name for v in self.store.candidate_versions()],
            previous=previous.name if previous else None,
            loaded=self.backend.versions(),
            params=params,
            temperatures=(self.config.temperature_a, self.config.temperature_b),
        )

    def start(self, user_id: int, messages: Any, *, max_new_tokens: Any = None) -> BattleTurn:
        """Check the request, store the user's message and start both answers.

        A battle counts as two answers against the chat limit. Its prompt is the last
        user message alone, as stored: earlier turns a client sends are not used.
        """
        cleaned = self.chat.clean_messages(messages)
        self.chat.check_user(user_id)
        self.chat.count_answers(user_id, 2)
        pairing = self.pairing(self.chat.sampling(None, max_new_tokens))
        sides = list(pairing.sides)
        self.rng.shuffle(sides)  # which version is A is part of the blind
        try:  # a battle that cannot be stored cannot be voted on: refuse it (503 when full)
            conversation = self.store.create_conversation(
                user_id, title=cleaned[-1]["content"][:80]
            )
            prompt = self.store.add_message(conversation.id, "user", cleaned[-1]["content"])
        except StoreError as exc:
            raise store_errors_as_input_errors(exc) from exc
        # both requests are queued before either is read: a batching backend runs them together
        replies: list[Reply] = []
        try:
            for side in sides:
                replies.append(
                    self.chat.stream(cleaned[-1:], version=side.version, params=side.params)
                )
        except (BackendError, InputError):
            for reply in replies:
                reply.cancel()
            raise
        a, b = (BattleSide(s.version, s.params, r) for s, r in zip(sides, replies, strict=True))
        return BattleTurn(user_id, conversation.id, prompt, pairing.kind, (a, b))

    def finish(self, turn: BattleTurn) -> Battle:
        """Store both answers as children of the prompt, then the battle (after `deltas()`)."""
        try:
            return self._store_battle(turn)
        except StoreError as exc:
            raise store_errors_as_input_errors(exc) from exc

    def _store_battle(self, turn: BattleTurn) -> Battle:
        answers = [
            self.store.add_message(
                turn.conversation_id,
                "assistant",
                side.text,
                parent_id=turn.prompt.id,
                version=side.reply.version,
                sampling=sampling_record(side.params, side.reply),
                latency_ms=side.reply.latency_ms,
                n_tokens=side.reply.n_tokens,
            )
            for side in turn.sides
        ]
        return self.store.create_battle(
            turn.user_id, turn.prompt.id, answers[0].id, answers[1].id, pairing=turn.pairing
        )

    def battle(self, user_id: int, messages: Any, **kwargs: Any) -> tuple[BattleTurn, Battle]:
        """A whole battle, not streamed."""
        turn = self.start(user_id, messages, **kwargs)
        for _ in turn.deltas():
            pass
        return turn, self.finish(turn)

    def vote(self, user_id: int, battle_id: Any, outcome: Any) -> Reveal:
        """Record the user's one vote on their battle; returns after it has committed."""
        check_id(battle_id, "battle_id")
        self.chat.check_user(user_id)
        if outcome not in OUTCOMES:
            raise InputError(400, "outcome must be 'a', 'b', 'tie' or 'both_bad'")
        if not self.limiter.hit(user_id):
            raise InputError(429, "too many votes; wait a few seconds and vote again")
        try:
            battle = self.store.vote_battle(battle_id, user_id, outcome)
        except AlreadyVoted as exc:
            raise InputError(409, str(exc)) from exc
        except StoreError as exc:
            raise store_errors_as_input_errors(exc) from exc
        return self.reveal(battle)

    def reveal(self, battle: Battle) -> Reveal:
        if battle.outcome is None:
            raise InputError(409, f"battle {battle.id} has no vote yet; versions stay hidden")
        return Reveal(
            battle.id,
            battle.outcome,
            self.store.get_version_by_id(battle.version_a_id).name,
            self.store.get_version_by_id(battle.version_b_id).name,
            battle.pairing,
        )
