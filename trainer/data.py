"""Feedback → training examples, following the design's table.

| feedback                | example                                                        |
|-------------------------|----------------------------------------------------------------|
| battle A or B           | pair (winner ≻ loser)                                          |
| battle tie              | nothing: dropped (reason `tie`); a tie says neither answer is  |
|                         | better, which a hard Bradley–Terry pair cannot say (as a 0.5   |
|                         | soft target it moved held-out agreement by −0.4 to +0.9 points |
|                         | on three simulated tastes: README, "What each judgment ...")   |
| battle both bad         | two unpaired negatives (label False), never a pair            |
| thumbs                  | up ≻ down between one person's answers to the same prompt      |
|                         | (the same conversation so far, in any conversation) → pairs;   |
|                         | every thumb left over → unpaired with its label (KTO-style)    |
| edit (correction)       | pair (corrected text ≻ original answer)                        |
| retry                   | unpaired weak negative (label False, weight `RETRY_WEIGHT`)    |
| flag                    | nothing (not a judgment of quality)                            |

Thumbs are paired only within one person's answers to one prompt: one pair is then one
person's judgment, which keeps the per-user weighting and the trace exact; thumbs from
different people measure different scales, not answers.

The prompt of an example is the conversation up to the answer's parent, following
`parent_id` links, as `{"role", "content"}` dicts. Quality, before anything else: votes
from flagged users are dropped; one vote per (user, item), the latest. Then every
example gets its user's weight (`user_weights`): a user's examples all weigh
`min(1, C / n_u)` (`n_u` the user's examples, each counted at its own weight), with `C`
the largest value at which no user's share of the total weight exceeds
`max_user_share`. When no `C` can hold the share (fewer than `1 / max_user_share`
users), every user's total is made equal instead, the nearest the data allows: one
person alone keeps every example at full weight, and one among many cannot dominate.
Nothing is dropped for a share. The held-out split is by conversation, by a seeded hash
of its id, never by row.

`training_filters=False` (what `export` writes by default) keeps flagged users'
judgments and repeated votes and gives every example weight 1: every judgment as it
was made.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from storage import Message, Store
    from storage.training_data import AnswerFeedback, BattleVote

SOURCES = ("battle", "thumb", "edit", "retry")
RETRY_WEIGHT = 0.5
"""Weight of a retry's negative: asking again says less than a thumb down."""
DEFAULT_MAX_USER_SHARE = 0.2

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
    user_weight: float = 1.0
    """The per-user weight (`user_weights`); 1 until the dataset is weighted."""

    @property
    def key(self) -> str:
        return f"{self.source}:{self.source_ids}:{self.message_ids}"

    @property
    def trained_weight(self) -> float:
        """What this pair weighs in the reward model's loss."""
        return self.user_weight


@dataclass(frozen=True)
class LabeledAnswer:
    """One answer judged good (`label` True) or bad on its own: a KTO-style example."""

    prompt: Messages
    completion: str
    label: bool
    weight: float  # what the judgment says: 1, or RETRY_WEIGHT for a retry
    source: str  # battle | thumb | retry
    user_id: int
    conversation_id: int
    version: str | None
    source_ids: tuple[int, ...]
    message_ids: tuple[int, ...]
    user_weight: float = 1.0
    """The per-user weight (`user_weights`); 1 until the dataset is weighted."""

    @property
    def key(self) -> str:
        return f"{self.source}:{self.source_ids}:{self.message_ids}"

    @property
    def trained_weight(self) -> float:
        """What this label weighs in the reward model's loss (before the pointwise
        term's own factor, `reward.pointwise_weight`)."""
        return self.weight * self.user_weight


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
    identical_answers, no_prompt."""
    users: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per user id (a string, for JSON): examples `kept` (pairs and unpaired together),
    the `weight` each of them carries, and the user's `share` of the total weight."""
    train_pairs: int = 0
    heldout_pairs: int = 0
    train_unpaired: int = 0
    heldout_unpaired: int = 0
    max_user_share: float = 1.0
    """The share no user's total weight may exceed when there are enough users."""

    @property
    def n_pairs(self) -> int:
        return self.train_pairs + self.heldout_pairs

    def summary(self) -> str:
        def fmt(counts: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"

        text = (
            f"pairs: {self.n_pairs} ({fmt(self.pairs)}; {self.train_pairs} train, "
            f"{self.heldout_pairs} held out); unpaired: "
            f"{self.train_unpaired + self.heldout_unpaired} ({fmt(self.unpaired)}); "
            f"left out: {fmt(self.filtered)}"
        )
        weighted = sum(1 for u in self.users.values() if u.get("weight", 1.0) < 1.0)
        if weighted:
            top = max(u.get("share", 0.0) for u in self.users.values())
            text += (
                f"; {weighted} of {len(self.users)} users weighted down (largest share {top:.0%})"
            )
        return text


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
    max_user_share: float = DEFAULT_MAX_USER_SHARE,
    seed: int = 0,
    training_filters: bool = True,
    user_share_cap: float | None = None,
) -> FeedbackDataset:
    """Every judgment in the store as training examples, filtered, weighted and split.

    `training_filters=False`: every judgment as made (flagged users and repeated votes
    kept, every weight 1). `user_share_cap` is the old name of `max_user_share`.
    """
    if user_share_cap is not None:
        max_user_share = user_share_cap
    filtered: Counter[str] = Counter()
    feedback = store.answer_feedback()
    battles = store.battle_votes()
    if training_filters:
        feedback = _latest_per_item(
            _drop_flagged(feedback, filtered),
            lambda f: (f.user_id, f.kind, f.message_id),
            filtered,
        )
        battles = _latest_per_item(
            _drop_flagged(battles, filtered),
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
    kept: Counter[int] = Counter(e.user_id for e in [*pairs, *unpaired])
    weights: dict[int, float] = dict.fromkeys(kept, 1.0)
    if training_filters:
        totals: Counter[int] = Counter()
        for pair in pairs:
            totals[pair.user_id] += 1.0
        for label in unpaired:
            totals[label.user_id] += label.weight
        weights = user_weights(totals, max_user_share)
        pairs = [replace(p, user_weight=weights[p.user_id]) for p in pairs]
        unpaired = [replace(u, user_weight=weights[u.user_id]) for u in unpaired]
    weighted: Counter[int] = Counter()
    for example in [*pairs, *unpaired]:
        weighted[example.user_id] += example.trained_weight
    all_weight = sum(weighted.values()) or 1.0
    train_pairs, heldout_pairs = split_by_conversation(pairs, heldout_fraction, seed=seed)
    train_unpaired, heldout_unpaired = split_by_conversation(unpaired, heldout_fraction, seed=seed)
    report = DataReport(
        pairs=dict(Counter(p.source for p in pairs)),
        unpaired=dict(Counter(u.source for u in unpaired)),
        filtered={reason: n for reason, n in filtered.items() if n},
        users={
            str(u): {
                "kept": n,
                "weight": round(weights[u], 6),
                "share": round(weighted[u] / all_weight, 6),
            }
            for u, n in kept.most_common()
        },
        train_pairs=len(train_pairs),
        heldout_pairs=len(heldout_pairs),
        train_unpaired=len(train_unpaired),
        heldout_unpaired=len(heldout_unpaired),
        max_user_share=max_user_share if training_filters else 1.0,
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


def user_weights(totals: Mapping[int, float], max_share: float) -> dict[int, float]:
    """{user: the weight each of the user's examples gets}, from each user's total
    (unweighted) amount of examples.

    Every user's total is capped at `C`: weight `min(1, C / n_u)`. `C` is the largest
    value at which the biggest user's share `C / Σ min(n_v, C)` stays within
    `max_share`; that share only grows with `C`, so a bisection finds it. When even
    equal totals break the share (fewer than `1 / max_share` users), `C` is the
    smallest user's total: every user then counts the same, the most even split there
    is. One user alone, or a share nobody exceeds, leaves every weight at 1.
    """
    counts = {u: float(n) for u, n in totals.items() if n > 0}
    if not counts:
        return {u: 1.0 for u in totals}
    values = sorted(counts.values())

    def share(cap: float) -> float:
        return cap / sum(min(n, cap) for n in values)

    if share(values[-1]) <= max_share + 1e-12:
        cap = values[-1]
    elif share(values[0]) > max_share:
        cap = values[0]
    else:
        low, high = values[0], values[-1]
        for _ in range(100):
            middle = (low + high) / 2
            if share(middle) <= max_share:
                low = middle
            else:
                high = middle
        cap = low
    weights = {u: min(1.0, cap / n) for u, n in counts.items()}
    return {u: weights.get(u, 1.0) for u in totals}


def weighted_subsample(examples: Sequence[Example], *, seed: int = 0) -> list[Example]:
    """For trainers without per-example weights (TRL's RewardTrainer): each user keeps
    `ceil(weight × n_u)` of their examples, chosen by a seeded hash, not by order."""
    by_user: dict[int, list[Example]] = defaultdict(list)
    for example in examples:
        by_user[example.user_id].append(example)
    dropped: set[str] = set()
    for user_examples in by_user.values():
        keep = math.ceil(user_examples[0].user_weight * len(user_examples) - 1e-9)
        ranked = sorted(user_examples, key=lambda e: _hash01(seed, e.key))
        dropped.update(e.key for e in ranked[keep:])
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
    """Pairs within one person's thumbs on answers to the same prompt (the same
    conversation so far, whether siblings or in another conversation); the rest unpaired."""
    groups: dict[tuple[int, str], list[AnswerFeedback]] = defaultdict(list)
    prompts: dict[tuple[int, str], Messages] = {}
    for t in thumbs:
        prompt = contexts.through(t.parent_id)
        key = (t.user_id, json.dumps(prompt, sort_keys=True))
        groups[key].append(t)
        prompts.setdefault(key, prompt)
    for key, group in groups.items():
        prompt = prompts[key]
        ups = [t for t in group if t.value == 1]
        downs = [t for t in group if t.value == -1]
        for up, down in zip(ups, downs, strict=False):
            yield PreferencePair(
                prompt=prompt,
                chosen=up.content,
                rejected=down.content,
                source="thumb",
                user_id=up.user_id,
                conversation_id=up.conversation_id,
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
                user_id=t.user_id,
                conversation_id=t.conversation_id,
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
