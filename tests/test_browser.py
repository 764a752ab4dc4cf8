"""The page in headless Chromium (Debian's, driven by Playwright; no browser download)."""

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.server_process import running_server

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HOSTILE = 'Hi <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>'


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make browser-deps` installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("browser-data"), backend="scripted") as srv:
        yield srv


def open_page(browser, server):
    page = browser.new_page()
    page.goto(server.url, wait_until="load")  # Gradio keeps a connection open: no networkidle
    page.get_by_text("Live model version").wait_for()
    page.locator("#live-version code").get_by_text("base").wait_for()  # sign-in has run
    return page


def test_chat_and_thumb_in_the_browser(browser, server):
    page = open_page(browser, server)
    box = page.locator("#chat-input textarea")
    box.fill(HOSTILE)
    box.press("Enter")
    page.locator("#chatbot").get_by_text("You said:").wait_for(timeout=30_000)
    page.get_by_role("button", name="Like").last.click()
    conn = sqlite3.connect(server.data_dir / "chat.db")
    try:
        deadline_rows = []
        for _ in range(100):  # the thumb is written by a queued event: poll until it lands
            deadline_rows = conn.execute("SELECT kind, value FROM feedback").fetchall()
            if deadline_rows:
                break
            page.wait_for_timeout(100)
        assert [("thumb", 1)] == deadline_rows
        stored = conn.execute(
            "SELECT m.role, m.content, v.name FROM messages m"
            " LEFT JOIN model_versions v ON v.id = m.model_version_id ORDER BY m.id"
        ).fetchall()
    finally:
        conn.close()
    assert [("user", HOSTILE, None), ("assistant", f"You said: {HOSTILE}", "base")] == stored
    # Gradio sanitizes the rendered HTML: no script ran, no handler attribute survived
    assert page.evaluate("window.__pwned") is None
    assert 0 == page.locator("#chatbot script").count()
    assert 0 == page.locator("#chatbot [onerror]").count()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "chat.png", full_page=True)
    page.close()


def test_identity_survives_a_reload(browser, server):
    def users():
        conn = sqlite3.connect(server.data_dir / "chat.db")
        try:
            return conn.execute("SELECT count(*) FROM users").fetchone()[0]
        finally:
            conn.close()

    page = open_page(browser, server)
    before = users()
    page.reload(wait_until="load")
    page.locator("#live-version code").get_by_text("base").wait_for()
    assert before == users()  # the browser kept its signed identity: no new user
    page.close()


def test_arena_battle_and_vote_in_the_browser(browser, server):
    page = open_page(browser, server)
    page.get_by_role("tab", name="Arena").click()
    box = page.locator("#arena-input textarea")
    box.fill("Which answer wins?")
    box.press("Enter")
    for side in ("#arena-a", "#arena-b"):
        page.locator(side).get_by_text("You said: Which answer wins?").wait_for(timeout=30_000)
    page.locator("#arena-reveal").get_by_text("Which answer is better?").wait_for()
    page.locator("#vote-a").click()  # Playwright waits until the button is enabled
    page.locator("#arena-reveal").get_by_text("A was").wait_for()
    assert [True] * 4 == [
        page.locator(f"#vote-{o}").is_disabled() for o in ("a", "b", "tie", "both_bad")
    ]
    conn = sqlite3.connect(server.data_dir / "chat.db")
    try:
        battles = conn.execute(
            "SELECT b.outcome, b.voted_at IS NOT NULL, b.pairing, p.content FROM battles b"
            " JOIN messages p ON p.id = b.prompt_message_id"
        ).fetchall()
    finally:
        conn.close()
    assert [("a", 1, "live_two_samples", "Which answer wins?")] == battles
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "arena.png", full_page=True)
    page.close()
