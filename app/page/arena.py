"""The Arena tab: the user types a prompt, two anonymous answers stream side by side,
four buttons take one vote, and only then are the versions behind A and B shown.
Small named handlers call `ArenaService`; nothing here is global.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from app.arena import ArenaService, Reveal
from app.errors import InputError
from app.identity import Identity
from app.page.session import current_user
from app.serving.backend import BackendError

VOTES = (("a", "A is better"), ("b", "B is better"), ("tie", "Tie"), ("both_bad", "Both are bad"))
VOTE_WORDS = dict(VOTES)
PAIRING_WORDS = {
    "candidate_vs_live": "a candidate against the live version",
    "live_vs_previous": "the live version against the one before it",
    "live_two_samples": "two samples of the live version at different temperatures",
}
ASK_FOR_VOTE = "Which answer is better? The versions are revealed after your vote."


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


def start_battle(arena: ArenaService, identity: Identity):
    def start_battle(text: str, token: str | None) -> Iterator[tuple]:
        """Start both answers, stream them side by side, then unlock the vote buttons."""
        try:
            uid = current_user(identity, token, arena.store)
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
            reveal = arena.vote(current_user(identity, token, arena.store), battle_id, outcome)
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
