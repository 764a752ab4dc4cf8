"""Example oracles for the simulated voters: `FUNC(prompt, answer) -> float`, higher is better.

An oracle stands in for people's taste in `rlhf-chat simulate` and `rlhf-chat bench
loop`. These are examples, not part of the product: the simulator and the trainer
work with any importable function of that shape and never learn which one is used.

A useful oracle scores the base model's own answers differently from one another.
Voters can only prefer what the model already sometimes does; a taste that no base
answer shows gives every battle a tie and teaches nothing. `python -m
bench.oracle_spread` measures that on sampled base answers: the share of answer pairs
to one prompt that an oracle ties, and how many of its votes would be decisive at the
voters' noise (bench/results/oracles/README.md has the figures).

Tastes of different kinds, so a training recipe is not tuned to one:

- `friendliness`: warm words and tone, per 30 words (word lists; the prompt is ignored);
- `readability`: plain language, the Flesch reading ease (sentence and word length: a
  continuous style measure, no word lists; the prompt is ignored);
- `topicality`: staying on the question, content words shared with the prompt (the
  same answer scores differently for different prompts);
- `specificity`: concrete detail, numbers, names and examples against vague words;
- `length`: words; too easy, kept to show what the gate's length alarm is for.
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


# -- readability: plain language -----------------------------------------------------------

_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|\n+")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")
READABLE_WORDS = 20  # answers shorter than this earn a matching share of the score


def _syllables(word: str) -> int:
    """Vowel groups, less a silent final "e" ("make": 1, "table": 2); at least 1."""
    word = word.strip("'")
    n = len(_VOWEL_GROUP.findall(word))
    if word.endswith("e") and not word.endswith(("le", "ee", "ye")) and n > 1:
        n -= 1
    return max(n, 1)


def readability(prompt: str, answer: str) -> float:
    """Plain language, in [0, 6]: the Flesch reading ease (Flesch 1948) of the answer,
    clipped to [0, 120] and divided by 20. Short sentences and short words score high.

        ease = 206.835 - 1.015 * words per sentence - 84.6 * syllables per word

    Syllables are counted by vowel groups; a sentence ends at `.`, `!`, `?` or a line
    break, and an unfinished last sentence counts as one. Answers shorter than 20 words
    earn that share of the score (10 words: half), so a one-word "Yes." wins nothing.
    The length of a complete answer does not matter, and the prompt is ignored: a taste
    for style, not for content. Differences of a few points of ease are a decisive
    vote at the bench's noise of 0.5 only when they reach 10 points (half a unit).
    """
    words = _WORD.findall(answer.lower())
    if not words:
        return 0.0
    sentences = sum(1 for part in _SENTENCE_END.split(answer) if _WORD.search(part.lower()))
    syllables = sum(_syllables(w) for w in words)
    ease = 206.835 - 1.015 * len(words) / max(sentences, 1) - 84.6 * syllables / len(words)
    return min(max(ease, 0.0), 120.0) / 20 * min(1.0, len(words) / READABLE_WORDS)


# -- topicality: staying on the question ---------------------------------------------------

STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further get gets got had has have having he her here hers him his how i if in
    into is it its itself just let like make me more most much my no nor not now of off on
    once one only or other our out over own same say she should so some such than that the
    their them then there these they this those through to too under until up us very was
    we were what when where which while who whom why will with would you your
    describe explain give help list need please quick short suggest tell want write""".split()
)
TOPIC_WORDS = 12  # the on-topic share is taken over at least this many content words


def _stem(word: str) -> str:
    """A crude stem: "plant", "plants", "planting", "planted" and "plant's" become
    "plant"; "make", "makes" and "making" become "mak"; "berries" becomes "berry"."""
    word = word.strip("'").removesuffix("'s")
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "shes", "ches", "xes", "zes")):
        word = word[:-2]
    elif word.endswith("ing") and len(word) > 5:
        word = word[:-3]
    elif word.endswith("ed") and len(word) > 4:
        word = word[:-2]
    elif word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        word = word[:-1]
    return word.removesuffix("e") if len(word) > 3 else word


def _content_words(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 2]


def topicality(prompt: str, answer: str) -> float:
    """Staying on the question, in [0, 6]: 3 × the share of the prompt's content words
    the answer uses (coverage), plus 3 × the share of the answer's content words that
    are the prompt's (focus, over at least 12 words, so a terse echo of the question
    earns little of it).

    Content words are words of three letters or more outside a list of function words,
    cut to a crude stem ("plants" and "planting" count as "plant"). A prompt without
    content words ("Hi!") scores every answer 0. Unlike `friendliness` and
    `readability` this taste depends on the prompt: the same answer is good for one
    question and poor for another.
    """
    asked = set(_content_words(prompt))
    said = _content_words(answer)
    if not asked or not said:
        return 0.0
    coverage = len(asked & set(said)) / len(asked)
    focus = sum(w in asked for w in said) / max(len(said), TOPIC_WORDS)
    return 3.0 * coverage + 3.0 * focus


# -- specificity: concrete detail ----------------------------------------------------------

_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)*\b")
_LIST_MARKER = re.compile(r"^\s*\d+[.)]\s", re.MULTILINE)
EXAMPLE_PHRASES = ("for example", "for instance", "such as", "e.g", "including", "called")
VAGUE = (
    "a lot",
    "basically",
    "etc",
    "generally",
    "kind of",
    "many",
    "often",
    "some",
    "something",
    "sort of",
    "stuff",
    "thing",
    "things",
    "usually",
    "various",
)
_EXAMPLE = _pattern(EXAMPLE_PHRASES)
_VAGUE = _pattern(VAGUE)
# A capitalized word that does not start a sentence or a line: a name ("Paris", "Newton").
_NAME = re.compile(r"(?<![.!?:\n]\s)(?<![.!?:\n])(?<!^)\b(?!I\b)[A-Z][a-z]+")


def specificity(prompt: str, answer: str) -> float:
    """Concrete detail per 30 words (never fewer): numbers (+1 each), names, i.e.
    capitalized words inside a sentence (+0.5 each), example phrases such as "for
    example" or "such as" (+1 each), vague words such as "things", "some", "usually"
    (-0.5 each). Mostly within [-2, 5] on the base model's answers; unbounded in
    principle, never NaN.

    A taste for content that the base model shows unevenly (some answers give a date
    or a name, most give none). The prompt is ignored.
    """
    answer = _LIST_MARKER.sub("", answer)  # "1." numbering a list is no detail
    words = len(_WORD.findall(answer.lower()))
    text = answer.lower()
    points = (
        len(_NUMBER.findall(answer))
        + 0.5 * len(_NAME.findall(answer))
        + len(_EXAMPLE.findall(text))
        - 0.5 * len(_VAGUE.findall(text))
    )
    return points * REFERENCE_WORDS / max(words, REFERENCE_WORDS)
