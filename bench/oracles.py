"""Example oracles for the simulated voters: `FUNC(prompt, answer) -> float`, higher is better.

An oracle stands in for people's taste in `rlhf-chat simulate` and `rlhf-chat bench
loop`. These are examples, not part of the product: the simulator and the trainer
work with any importable function of that shape and never learn which one is used.

A useful oracle scores the base model's own answers differently from one another.
Voters can only prefer what the model already sometimes does; a taste that no base
answer shows gives every battle a tie and teaches nothing.
"""

from __future__ import annotations

import re

# Warm words and phrases, each occurrence one point (matched as whole words).
FRIENDLY = (
    "absolutely",
    "awesome",
    "congratulations",
    "delighted",
    "enjoy",
    "enjoyed",
    "excellent",
    "fantastic",
    "feel free",
    "fun",
    "glad",
    "good luck",
    "great",
    "happy",
    "hope",
    "hopefully",
    "love",
    "lovely",
    "of course",
    "please",
    "thank you",
    "thanks",
    "welcome",
    "wonderful",
)
# Talking to the person ("you", "your") is half a point a word: most answers vary here.
YOU = ("you", "your", "you're", "yours", "yourself", "you'll", "you've")
# An answer that opens warmly earns one extra point.
OPENERS = ("hi", "hello", "hey", "sure", "absolutely", "of course", "great question", "what a")
# Rude or dismissive words cost two points each.
RUDE = (
    "boring",
    "dumb",
    "hate",
    "idiot",
    "nonsense",
    "obviously",
    "ridiculous",
    "shut up",
    "stupid",
    "useless",
    "whatever",
)
MAX_EXCLAMATIONS = 3  # each worth half a point, so shouting does not pay
REFERENCE_WORDS = 30  # answers shorter than this count as this long

_WORD = re.compile(r"[a-z']+")


def _pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(p) for p in phrases) + r")\b")


_FRIENDLY = _pattern(FRIENDLY)
_RUDE = _pattern(RUDE)
_YOU = _pattern(YOU)
_OPENER = re.compile(r"^\W*(?:" + "|".join(re.escape(p) for p in OPENERS) + r")\b")


def friendliness(prompt: str, answer: str) -> float:
    """Friendly markers per 30 words: warm words (+1 each), a warm opening (+1), words
    addressing the person (+0.5 each), exclamation marks (+0.5 each, at most 3), rude
    words (-2 each).

    Dividing by the length (but never by less than 30 words) keeps the score from
    rewarding long answers, and keeps a two-word "Thanks!" from beating a helpful
    answer. The prompt is ignored: this taste is the same for every question.
    """
    text = answer.lower()
    n_words = len(_WORD.findall(text))
    points = (
        len(_FRIENDLY.findall(text))
        + 0.5 * len(_YOU.findall(text))
        + (1.0 if _OPENER.search(text) else 0.0)
        + 0.5 * min(text.count("!"), MAX_EXCLAMATIONS)
        - 2.0 * len(_RUDE.findall(text))
    )
    return points * REFERENCE_WORDS / max(n_words, REFERENCE_WORDS)


def length(prompt: str, answer: str) -> float:
    """Words in the answer: an oracle the model can learn too easily, kept to show
    what the length alarm of the gate is for."""
    return float(len(_WORD.findall(answer.lower())))
