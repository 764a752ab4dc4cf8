"""Feedback → training examples, following the design's table.

| feedback                | example                                                        |
|-------------------------|----------------------------------------------------------------|
| battle A or B           | pair (winner ≻ loser)                                          |
| battle tie              | nothing: dropped (reason `tie`); no 0.5 soft targets, because  |
|                         | TRL's RewardTrainer takes hard pairs only                      |
| battle both bad         | two unpaired negatives (label False), never a pair            |
| thumbs                  | up ≻ down between answers to the same prompt (siblings: same   |
|                         | conversation and parent message, the same person) → pairs;     |
|                         | every thumb left over → unpaired with its label (KTO-style)    |
| edit (correction)       | pair (corrected text ≻ original answer)                        |
| retry                   | unpaired weak negative (label False, weight `RETRY_WEIGHT`)    |

Thumbs are paired only within one person's sibling answers (what someone does after a
retry): one pair is then one person's judgment, which keeps the per-user cap and the
trace exact; thumbs from different people measure different scales, not answers.

The prompt of an example is the conversation up to the answer's parent, following
`parent_id` links, as `{"role", "content"}` dicts. Quality, before anything else: votes
from flagged users are dropped; one vote per (user, item), the latest; then no user
supplies more than `user_share_cap` of the pairs, nor of the unpaired examples (the
excess is dropped by a seeded hash, so the same data always loses the same rows). The
held-out split is by conversation, by a seeded hash of its id, never by row.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from storage import Message, Store
    from storage.training_data import AnswerFeedback, BattleVote

SOURCES = ("battle", "thumb", "edit", "retry")
RETRY_WEIGHT = 0.5
"""Weight of a retry's negative: asking again says less than a thumb down."""

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class PreferencePair:
    """`chosen` ≻ `rejected` as answers to `prompt`, and where that judgment came from."""

    prompt: Messages
    chosen: str
    rejected: str
    source: str  # battle | thumb | edit
    user_id: int
    conversation_id: int
    chosen_version: str | None  # None: written by a person (an edit)
    rejected_version: str | None
    source_ids: tuple[int, ...]  # battles.id for battles, feedback.id otherwise
    message_ids: tuple[int, ...]  # the answers judged

    @property
    def key(self) -> str:
        return f"{self.source}:{self.source_ids}:{self.message_ids}"


@dataclass(frozen=True)
class LabeledAnswer:
    """One answer judged good (`label` True) or bad on its own: a KTO-style example."""

    prompt: Messages
    completion: str
    label: bool
    weight: float
    source: str  # battle | thumb | retry
    user_id: int
    conversation_id: int
    version: str | None
    source_ids: tuple[int, ...]
    message_ids: tuple[int, ...]

    @property
    def key(self) -> str:
        return f"{self.source}:{self.source_ids}:{self.message_ids}"


Example = TypeVar("Example", PreferencePair, LabeledAnswer)


@dataclass
class DataReport:
    """What went into a dataset and what was left out, and why."""

    pairs: dict[str, int] = field(default_factory=dict)
    """Preference pairs kept, by source."""
    unpaired: dict[str, int] = field(default_factory=dict)
    """Unpaired (KTO) examples kept, by source."""
    filtered: dict[str, int] = field(default_factory=dict)
    """Judgments or examples left out, by reason: flagged_user, duplicate_vote, tie,
    identical_answers, no_prompt, user_cap."""
    users: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per user id (a string, for JSON): examples `offered` before the per-user cap and
    `kept` after it, pairs and unpaired together."""
    train_pairs: int = 0
    heldout_pairs: int = 0
    train_unpaired: int = 0
    heldout_unpaired: int = 0

    @property
    def n_pairs(self) -> int:
        return self.train_pairs + self.heldout_pairs

    def summary(self) -> str:
        def fmt(counts: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"

        return (
            f"pairs: {self.n_pairs} ({fmt(self.pairs)}; {self.train_pairs} train, "
            f"{self.heldout_pairs} held out); unpaired: "
            f"{self.train_unpaired + self.heldout_unpaired} ({fmt(self.unpaired)}); "
            f"left out: {fmt(self.filtered)}"
        )


@dataclass
class FeedbackDataset:
    train_pairs: list[PreferencePair]
    heldout_pairs: list[PreferencePair]
    train_unpaired: list[LabeledAnswer]
    heldout_unpaired: list[LabeledAnswer]
    report: DataReport


def build_dataset(
    store: Store,
    *,
    heldout_fraction: float = 0.2,
    user_share_cap: float = 0.2,
    seed: int = 0,
) -> FeedbackDataset:
    """Every judgment in the store as training examples, filtered and split."""
    filtered: Counter[str] = Counter()
    feedback = _latest_per_item(
        _drop_flagged(store.answer_feedback(), filtered),
        lambda f: (f.user_id, f.kind, f.message_id),
        filtered,
    )
    battles = _latest_per_item(
        _drop_flagged(store.battle_votes(), filtered),
        lambda b: (b.user_id, frozenset((b.message_a_id, b.message_b_id))),
        filtered,
    )
    contexts = _Contexts(
        store.messages_of_conversations(
            [f.conversation_id for f in feedback] + [b.conversation_id for b in battles]
        )
    )
    pairs: list[PreferencePair] = []
    unpaired: list[LabeledAnswer] = []
    for examples in (
        _from_battles(battles, contexts, filtered),
        _from_thumbs([f for f in feedback if f.kind == "thumb"], contexts),
        _from_edits([f for f in feedback if f.kind == "edit"], contexts, filtered),
        _from_retries([f for f in feedback if f.kind == "retry"], contexts),
    ):
        for example in examples:
            if not example.prompt:
                filtered["no_prompt"] += 1
            elif isinstance(example, PreferencePair):
                pairs.append(example)
            else:
                unpaired.append(example)
    offered = Counter(e.user_id for e in [*pairs, *unpaired])
    pairs = cap_user_share(pairs, user_share_cap, seed=seed, filtered=filtered)
    unpaired = cap_user_share(unpaired, user_share_cap, seed=seed, filtered=filtered)
    kept = Counter(e.user_id for e in [*pairs, *unpaired])
    train_pairs, heldout_pairs = split_by_conversation(pairs, heldout_fraction, seed=seed)
    train_unpaired, heldout_unpaired = split_by_conversation(unpaired, heldout_fraction, seed=seed)
    report = DataReport(
        pairs=dict(Counter(p.source for p in pairs)),
        unpaired=dict(Counter(u.source for u in unpaired)),
        filtered={reason: n for reason, n in filtered.items() if n},
        users={str(u): {"offered": n, "kept": kept[u]} for u, n in offered.most_common()},
        train_pairs=len(train_pairs),
        heldout_pairs=len(heldout_pairs),
        train_unpaired=len(train_unpaired),
        heldout_unpaired=len(heldout_unpaired),
    )
    return FeedbackDataset(train_pairs, heldout_pairs, train_unpaired, heldout_unpaired, report)


# -- quality filters -----------------------------------------------------------------


def _drop_flagged(rows: list[Any], filtered: Counter[str]) -> list[Any]:
    kept = [r for r in rows if not r.user_flagged]
    filtered["flagged_user"] += len(rows) - len(kept)
    return kept


def _latest_per_item(
    rows: list[Any], item: Callable[[Any], Any], filtered: Counter[str]
) -> list[Any]:
    """One vote per (user, item): the latest (rows come oldest first)."""
    latest = {item(r): r for r in rows}
    filtered["duplicate_vote"] += len(rows) - len(latest)
    kept = {id(r) for r in latest.values()}
    return [r for r in rows if id(r) in kept]


def cap_user_share(
    examples: Sequence[Example],
    cap: float,
    *,
    seed: int = 0,
    filtered: Counter[str] | None = None,
) -> list[Example]:
    """Drop examples so that no user supplies more than `cap` of what is kept.

    Every user keeps at most `m` examples, `m` the largest count with `m <= cap * kept`;
    which of a user's examples go is decided by a seeded hash, not by order. With
    fewer than `1 / cap` users no set satisfies the cap, and nothing is kept.
    """
    by_user: dict[int, list[Example]] = defaultdict(list)
    for example in examples:
        by_user[example.user_id].append(example)
    counts = [len(v) for v in by_user.values()]

    def kept_with(m: int) -> int:
        return sum(min(n, m) for n in counts)

    # cap * kept_with(m) - m is concave in m and 0 at m = 0: grow m while it stays >= 0
    m = 0
    while m < max(counts, default=0) and m + 1 <= cap * kept_with(m + 1) + 1e-9:
        m += 1
    dropped: set[str] = set()
    for user_examples in by_user.values():
        if len(user_examples) > m:
            ranked = sorted(user_examples, key=lambda e: _hash01(seed, e.key))
            dropped.update(e.key for e in ranked[m:])
    if filtered is not None:
        filtered["user_cap"] += len(dropped)
    return [e for e in examples if e.key not in dropped]


def split_by_conversation(
    examples: Sequence[Example], heldout_fraction: float, *, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """(train, held out): a conversation's examples all land on the same side."""
    train: list[Example] = []
    heldout: list[Example] = []
    for example in examples:
        side = heldout if is_heldout(example.conversation_id, heldout_fraction, seed) else train
        side.append(example)
    return train, heldout


def is_heldout(conversation_id: int, heldout_fraction: float, seed: int = 0) -> bool:
    return _hash01(seed, f"conversation:{conversation_id}") < heldout_fraction


def _hash01(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# -- feedback kinds → examples ---------------------------------------------------------


class _Contexts:
    """Conversation prefixes, rebuilt from `parent_id` links."""

    def __init__(self, conversations: dict[int, list[Message]]) -> None:
        self._by_id = {m.id: m for messages in conversations.values() for m in messages}

    def through(self, message_id: int | None) -> Messages:
        """The chain of messages from the conversation's start to `message_id`, inclusive."""
        chain: Messages = []
        seen: set[int] = set()
        while message_id is not None and message_id in self._by_id and message_id not in seen:
            seen.add(message_id)
            message = self._by_id[message_id]
            chain.append({"role": message.role, "content": message.content})
            message_id = message.parent_id
        return chain[::-1]


def _from_battles(
    battles: Iterable[BattleVote], contexts: _Contexts, filtered: Counter[str]
) -> Iterable[PreferencePair | LabeledAnswer]:
    for b in battles:
        prompt = contexts.through(b.prompt_message_id)
        sides = {
            "a": (b.content_a, b.version_a, b.message_a_id),
            "b": (b.content_b, b.version_b, b.message_b_id),
        }
        if b.outcome == "tie":
            filtered["tie"] += 1
        elif b.outcome == "both_bad":
            for content, version, message_id in sides.values():
                yield LabeledAnswer(
                    prompt=prompt,
                    completion=content,
                    label=False,
                    weight=1.0,
                    source="battle",
                    user_id=b.user_id,
                    conversation_id=b.conversation_id,
                    version=version,
                    source_ids=(b.battle_id,),
                    message_ids=(message_id,),
                )
        else:
            (won, won_version, won_id) = sides[b.outcome]
            (lost, lost_version, lost_id) = sides["b" if b.outcome == "a" else "a"]
            if won == lost:
                filtered["identical_answers"] += 1
                continue
            yield PreferencePair(
                prompt=prompt,
                chosen=won,
                rejected=lost,
                source="battle",
                user_id=b.user_id,
                conversation_id=b.conversation_id,
                chosen_version=won_version,
                rejected_version=lost_version,
                source_ids=(b.battle_id,),
                message_ids=(won_id, lost_id),
            )


def _from_thumbs(
    thumbs: Iterable[AnswerFeedback], contexts: _Contexts
) -> Iterable[PreferencePair | LabeledAnswer]:
    siblings: dict[tuple[int, int | None, int], list[AnswerFeedback]] = defaultdict(list)
    for t in thumbs:
        siblings[(t.conversation_id, t.parent_id, t.user_id)].append(t)
    for (conversation_id, parent_id, user_id), group in siblings.items():
        prompt = contexts.through(parent_id)
        ups = [t for t in group if t.value == 1]
        downs = [t for t in group if t.value == -1]
        for up, down in zip(ups, downs, strict=False):
            yield PreferencePair(
                prompt=prompt,
                chosen=up.content,
                rejected=down.content,
                source="thumb",
                user_id=user_id,
                conversation_id=conversation_id,
                chosen_version=up.version,
                rejected_version=down.version,
                source_ids=(up.feedback_id, down.feedback_id),
                message_ids=(up.message_id, down.message_id),
            )
        n_pairs = min(len(ups), len(downs))
        for t in ups[n_pairs:] + downs[n_pairs:]:
            yield LabeledAnswer(
                prompt=prompt,
                completion=t.content,
                label=t.value == 1,
                weight=1.0,
                source="thumb",
                user_id=user_id,
                conversation_id=conversation_id,
                version=t.version,
                source_ids=(t.feedback_id,),
                message_ids=(t.message_id,),
            )


def _from_edits(
    edits: Iterable[AnswerFeedback], contexts: _Contexts, filtered: Counter[str]
) -> Iterable[PreferencePair]:
    for e in edits:
        if (e.text or "").strip() == e.content.strip():
            filtered["identical_answers"] += 1
            continue
        yield PreferencePair(
            prompt=contexts.through(e.parent_id),
            chosen=e.text or "",
            rejected=e.content,
            source="edit",
            user_id=e.user_id,
            conversation_id=e.conversation_id,
            chosen_version=None,
            rejected_version=e.version,
            source_ids=(e.feedback_id,),
            message_ids=(e.message_id,),
        )


def _from_retries(
    retries: Iterable[AnswerFeedback], contexts: _Contexts
) -> Iterable[LabeledAnswer]:
    for r in retries:
        yield LabeledAnswer(
            prompt=contexts.through(r.parent_id),
            completion=r.content,
            label=False,
            weight=RETRY_WEIGHT,
            source="retry",
            user_id=r.user_id,
            conversation_id=r.conversation_id,
            version=r.version,
            source_ids=(r.feedback_id,),
            message_ids=(r.message_id,),
        )
