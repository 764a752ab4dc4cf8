"""The page's handlers called directly, as Gradio would call them."""

import gradio as gr
import pytest

from app.chat import ChatService
from app.config import ServingConfig
from app.identity import Identity
from app.page import build, session
from app.page import chat as ui
from app.serving.scripted import ScriptedBackend


@pytest.fixture
def parts(store):
    service = ChatService(store, ScriptedBackend(), ServingConfig())
    identity = Identity("test-secret")
    token = session.sign_in(identity, store)(None)
    return service, identity, token


def run(gen):
    return list(gen)[-1]


def chat(parts, text, history=None, conversation_id=None, ids=None):
    service, identity, token = parts
    respond = ui.respond(service, identity)
    return run(respond(text, history or [], conversation_id, ids or [], token, 0.7, 64))


def test_sign_in_keeps_a_valid_identity_and_replaces_a_bad_one(store):
    identity = Identity("s")
    sign_in = session.sign_in(identity, store)
    token = sign_in(None)
    assert token == sign_in(token)
    assert token != sign_in("garbage")
    assert 2 == store.count("users")


def test_respond_streams_and_stores(parts, store):
    service, identity, token = parts
    updates = list(ui.respond(service, identity)("hi", [], None, [], token, 0.7, 64))
    assert "" == updates[0][0]  # the textbox is cleared as soon as the message is taken
    _, history, conversation_id, ids, live = updates[-1]
    assert [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "You said: hi"},
    ] == history
    assert [m.id for m in store.conversation_messages(conversation_id)] == ids
    assert "base" in live
    _, history, same, ids, _ = chat(parts, "more", history, conversation_id, ids)
    assert conversation_id == same
    assert 4 == len(ids) == len(history)


def test_empty_message_is_refused_without_storing(parts, store):
    textbox, history, conversation_id, ids, _ = chat(parts, "   ")
    assert ("   ", [], None, []) == (textbox, history, conversation_id, ids)
    assert 0 == store.count("messages")


def test_history_as_gradio_blocks_is_accepted(parts):
    history = [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "You said: hi"}]},
    ]
    _, new_history, _, _, _ = chat(parts, "again", history)
    assert "You said: again" == new_history[-1]["content"]


def test_like_dislike_and_clear(parts, store):
    service, identity, token = parts
    _, history, _, ids, _ = chat(parts, "hi")
    thumb = ui.thumb(service, identity)
    for liked, expected in ((True, [1]), (False, [-1]), ("", [])):
        thumb(
            ids,
            token,
            gr.LikeData(None, {"index": 1, "value": history[1]["content"], "liked": liked}),
        )
        assert expected == [f.value for f in store.message_feedback(ids[1])]


def test_edit_of_an_answer_is_a_correction(parts, store):
    service, identity, token = parts
    _, history, conversation_id, ids, _ = chat(parts, "hi")
    correct = ui.correct(service, identity)
    data = gr.EditData(None, {"index": 1, "value": "Hello! How can I help?", "previous_value": "x"})
    history, _, _ = correct(history, conversation_id, ids, token, data)
    assert "Hello! How can I help?" == history[1]["content"]
    assert [("edit", "Hello! How can I help?")] == [
        (f.kind, f.text) for f in store.message_feedback(ids[1])
    ]
    # editing the user's own message is not a correction and is put back
    data = gr.EditData(None, {"index": 0, "value": "changed", "previous_value": "hi"})
    history, _, _ = correct(history, conversation_id, ids, token, data)
    assert "hi" == history[0]["content"]
    assert 1 == store.count("feedback")


def test_retry_replaces_the_answer_and_marks_the_old_one(parts, store):
    service, identity, token = parts
    _, history, conversation_id, ids, _ = chat(parts, "hi")
    retry = ui.retry(service, identity)
    history2, _, ids2, _ = run(
        retry(
            history,
            conversation_id,
            ids,
            token,
            0.7,
            64,
            gr.RetryData(None, {"index": 1, "value": "x"}),
        )
    )
    assert 2 == len(history2)
    assert ids[1] != ids2[1]
    assert [("retry", None)] == [(f.kind, f.value) for f in store.message_feedback(ids[1])]
    new = store.get_message(ids2[1])
    assert (ids[0], "base") == (new.parent_id, store.message_version_name(new.id))


def test_build_demo_has_the_chat_tab(store, tmp_path):
    from app.config import load_config

    config = load_config(env={"RLHF_CHAT_DATA": str(tmp_path)})
    demo = build.build_demo(ScriptedBackend(), store, config)
    assert isinstance(demo, gr.Blocks)
    labels = {getattr(block, "label", None) for block in demo.blocks.values()}
    assert {"Chat", "Temperature", "Max new tokens"} <= labels
