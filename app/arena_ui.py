"""The Arena and Leaderboard tabs of the page.

Arena: the user types a prompt, two anonymous answers stream side by side, four
buttons take one vote, and only then are the versions behind A and B shown.
Leaderboard: Bradley–Terry ratings with 95% intervals, battle counts and win rates,
the win-rate matrix, and a chart. Small named handlers call `ArenaService` and the
leaderboard; nothing here is global.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pandas as pd
from matplotlib.figure import Figure

from app.arena import ArenaService, Reveal
from app.chat import InputError
from app.identity import Identity
from app.leaderboard import Leaderboard, store_leaderboard
from app.serving import BackendError
from storage import Store

log = logging.getLogger(__name__)

VOTES = (("a", "A is better"), ("b", "B is better"), ("tie", "Tie"), ("both_bad", "Both are bad"))
VOTE_WORDS = dict(VOTES)
PAIRING_WORDS = {
    "candidate_vs_live": "a candidate against the live version",
    "live_vs_previous": "the live version against the one before it",
    "live_two_samples": "two samples of the live version at different temperatures",
}
ASK_FOR_VOTE = "Which answer is better? The versions are revealed after your vote."
TABLE_HEADERS = ["version", "status", "rating", "95% interval", "battles", "win rate"]


def arena_tabs(arena: ArenaService, identity: Identity, user_token: gr.BrowserState) -> None:
    """Both tabs, inside the page's `gr.Blocks`."""
    with gr.Tab("Arena"):
        arena_tab(arena, identity, user_token)
    with gr.Tab("Leaderboard") as tab:
        leaderboard_tab(arena.chat.store, tab)


# -- arena ------------------------------------------------------------------------------


def arena_tab(arena: ArenaService, identity: Identity, user_token: gr.BrowserState) -> None:
    gr.Markdown(
        "Two anonymous models answer the same prompt. Vote for the better answer; "
        "which model versions wrote them is shown after you vote."
    )
    with gr.Row():
        chat_a = gr.Chatbot(label="Model A", height=360, elem_id="arena-a")
        chat_b = gr.Chatbot(label="Model B", height=360, elem_id="arena-b")
    with gr.Row():
        prompt = gr.Textbox(
            placeholder="Type a prompt and press Enter",
            show_label=False,
            scale=8,
            max_length=arena.chat.config.max_message_chars,
            elem_id="arena-input",
        )
        send = gr.Button("Battle", scale=1, elem_id="arena-send")
    with gr.Row():
        buttons = [
            gr.Button(label, interactive=False, elem_id=f"vote-{outcome}")
            for outcome, label in VOTES
        ]
    reveal = gr.Markdown(elem_id="arena-reveal")
    battle_id = gr.State(None)

    battle_outputs = [prompt, chat_a, chat_b, battle_id, reveal, *buttons]
    gr.on(
        [prompt.submit, send.click],
        start_battle(arena, identity),
        inputs=[prompt, user_token],
        outputs=battle_outputs,
        api_name="battle",
    )
    for (outcome, _), button in zip(VOTES, buttons, strict=True):
        button.click(
            cast_vote(arena, identity, outcome),
            inputs=[battle_id, user_token],
            outputs=[reveal, *buttons],
            api_name=f"vote_{outcome}",
        )


def _buttons(interactive: bool) -> list[Any]:
    return [gr.update(interactive=interactive) for _ in VOTES]


def _current_user(identity: Identity, token: str | None, store: Store | None = None) -> int:
    from app.ui import current_user  # app.ui imports this module: look it up when called

    return current_user(identity, token, store)


def start_battle(arena: ArenaService, identity: Identity):
    def start_battle(text: str, token: str | None) -> Iterator[tuple]:
        """Start both answers, stream them side by side, then unlock the vote buttons."""
        try:
            uid = _current_user(identity, token, arena.store)
            turn = arena.start(uid, [{"role": "user", "content": text}])
        except (InputError, BackendError) as exc:
            gr.Warning(getattr(exc, "message", str(exc)))
            yield text, gr.skip(), gr.skip(), gr.skip(), gr.skip(), *_buttons(False)
            return
        chats = [
            [{"role": "user", "content": text}, {"role": "assistant", "content": ""}] for _ in "ab"
        ]
        yield "", chats[0], chats[1], None, "", *_buttons(False)
        try:
            for i, _ in turn.deltas():
                chats[i][1] = {"role": "assistant", "content": turn.sides[i].text}
                yield gr.skip(), chats[0], chats[1], None, "", *_buttons(False)
        except BackendError as exc:
            gr.Warning(str(exc))
            yield gr.skip(), chats[0], chats[1], None, "", *_buttons(False)
            return
        try:
            battle = arena.finish(turn)
        except InputError as exc:  # storage unavailable: nothing to vote on
            gr.Warning(exc.message)
            yield gr.skip(), chats[0], chats[1], None, "", *_buttons(False)
            return
        yield gr.skip(), chats[0], chats[1], battle.id, ASK_FOR_VOTE, *_buttons(True)

    return start_battle


def cast_vote(arena: ArenaService, identity: Identity, outcome: str):
    def cast_vote(battle_id: int | None, token: str | None) -> tuple:
        """Record the one vote of this battle, lock the buttons and reveal the versions."""
        if battle_id is None:
            gr.Warning("Start a battle first: type a prompt above.")
            return gr.skip(), *_buttons(False)
        try:
            reveal = arena.vote(_current_user(identity, token, arena.store), battle_id, outcome)
        except InputError as exc:
            gr.Warning(exc.message)
            # a rate limit or a full disk passes: keep the buttons for a retry
            return gr.skip(), *_buttons(exc.status in (429, 503))
        return reveal_text(reveal), *_buttons(False)

    return cast_vote


def reveal_text(reveal: Reveal) -> str:
    return (
        f"You voted **{VOTE_WORDS[reveal.outcome]}**. "
        f"A was `{reveal.version_a}`, B was `{reveal.version_b}` "
        f"({PAIRING_WORDS.get(reveal.pairing, reveal.pairing)})."
    )


# -- leaderboard ------------------------------------------------------------------------


def leaderboard_tab(store: Store, tab: gr.Tab) -> None:
    gr.Markdown(
        "Bradley–Terry ratings from the arena's votes (Elo scale, `base` = 1000; a tie "
        "counts half, *both are bad* counts for neither). Intervals: 95% bootstrap."
    )
    table = gr.Dataframe(
        headers=TABLE_HEADERS, interactive=False, label="Ratings", elem_id="leaderboard-table"
    )
    matrix = gr.Dataframe(
        interactive=False, label="Win rate of the row's version against the column's"
    )
    chart = gr.Plot(label="Ratings with 95% intervals", format="png")
    refresh = gr.Button("Refresh")
    gr.on(
        [tab.select, refresh.click],
        show_leaderboard(store),
        outputs=[table, matrix, chart],
        api_name="leaderboard",
    )


def show_leaderboard(store: Store):
    def show_leaderboard() -> tuple[pd.DataFrame, pd.DataFrame, Figure | None]:
        """The table, the win-rate matrix and the chart, from every vote so far."""
        board = store_leaderboard(store)
        statuses = {v.name: v.status for v in store.versions("policy")}
        return leaderboard_table(board, statuses), win_rate_table(board), rating_chart(board)

    return show_leaderboard


def leaderboard_table(board: Leaderboard, statuses: dict[str, str]) -> pd.DataFrame:
    rows = [
        [
            r.version,
            statuses.get(r.version, ""),
            r.rating,
            f"{r.ci95[0]:.0f} – {r.ci95[1]:.0f}",
            r.battles,
            "—" if r.win_rate is None else f"{r.win_rate:.0%}",
        ]
        for r in board.ratings
    ]
    return pd.DataFrame(rows, columns=TABLE_HEADERS)


def win_rate_table(board: Leaderboard) -> pd.DataFrame:
    names = [r.version for r in board.ratings]
    cells = [["—" if w is None else f"{w:.0%}" for w in row] for row in board.win_rates]
    return pd.DataFrame(
        [[n, *row] for n, row in zip(names, cells, strict=True)], columns=["", *names]
    )


def rating_chart(board: Leaderboard) -> Figure | None:
    """Each version's rating as a dot with its 95% interval, best on top."""
    if not board.ratings:
        return None
    ratings = board.ratings[::-1]
    figure = Figure(figsize=(6, 0.5 * len(ratings) + 1.2), layout="tight")
    axes = figure.add_subplot()
    y = range(len(ratings))
    x = [r.rating for r in ratings]
    err = [[r.rating - r.ci95[0] for r in ratings], [r.ci95[1] - r.rating for r in ratings]]
    axes.errorbar(x, y, xerr=err, fmt="o", capsize=4)
    axes.set_yticks(list(y), [r.version for r in ratings])
    axes.axvline(1000, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlabel("rating (base = 1000)")
    return figure
