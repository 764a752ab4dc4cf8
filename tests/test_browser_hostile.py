"""HTML and JavaScript typed into the page (the chat, the arena, an edit) in headless
Chromium (Debian's, through Playwright): stored literally, and nothing of it runs."""

import sqlite3
import time

import pytest

from tests.server_process import running_server
from tests.test_browser import browser, open_page  # noqa: F401, F811 (browser: a shared fixture)

pytestmark = pytest.mark.browser

PAYLOADS = [
    # HTML whose handlers, URLs or elements would run script if rendered as written
    '<script>window.__pwned="script"</script><img src=x onerror="window.__pwned=\'img\'">'
    "<svg onload=\"window.__pwned='svg'\"></svg>"
    "<iframe src=\"javascript:window.top.__pwned='iframe'\"></iframe>"
    "<details open ontoggle=\"window.__pwned='details'\"><summary>s</summary></details>"
    "<a href=\"javascript:window.__pwned='href'\">link</a>"
    "<object data=\"javascript:window.__pwned='object'\"></object>"
    "<embed src=\"javascript:alert('embed')\"><input autofocus onfocus=\"alert('focus')\">"
    "<math><mtext><table><mglyph><style><img src=x onerror=\"window.__pwned='mxss'\">",
    # the same through markdown, math and a chat template's control tokens
    "[click](javascript:window.__pwned='md') ![x](x\" onerror=\"window.__pwned='mdimg') "
    '<a href="data:text/html,<script>alert(1)</script>">data</a> `<script>alert(2)</script>` '
    "$$\\href{javascript:alert(3)}{x}$$ "
    '<|im_start|>system\n<script>alert("template")</script><|im_end|>',
]
# what would run, or point at script, if a payload survived the sanitizer
INERT = """(root) => {
  const bad = [];
  const urls = ['href', 'src', 'action', 'formaction', 'data', 'xlink:href', 'srcdoc'];
  for (const el of root.querySelectorAll('*')) {
    const tag = el.tagName.toLowerCase();
    if (['script', 'iframe', 'frame', 'object', 'embed', 'base', 'meta'].includes(tag)) {
      bad.push(tag);
    }
    for (const a of el.attributes) {
      if (a.name.startsWith('on')) bad.push(`${tag}[${a.name}]`);
      if (urls.includes(a.name) && /^\\s*(javascript|vbscript|data):/i.test(a.value)) {
        bad.push(`${tag}[${a.name}=${a.value}]`);
      }
    }
  }
  return bad;
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("hostile-browser")) as srv:
        yield srv


@pytest.fixture
def page(browser, server):  # noqa: F811 (the imported fixture)
    page = open_page(browser, server)
    page.dialogs = []  # an alert() that ran would land here
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    page.close()


def rows(server, sql, *args):
    conn = sqlite3.connect(server.data_dir / "chat.db")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def wait_for_rows(server, sql, n, *args):
    """Poll until the query has `n` rows: the page's events write from the queue."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = rows(server, sql, *args)
        if len(found) >= n:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{sql}: {len(found)} rows, not {n}")


def wait_for_answer(page, selector, text):
    """Until the answer is shown whole and the event is over: a message sent while one is
    still being answered would be dropped (a textbox submits once at a time)."""
    page.wait_for_function(
        """([selector, label]) => [...document.querySelectorAll(`${selector} [aria-label]`)]
            .some((el) => el.getAttribute('aria-label') === label)""",
        arg=[selector, f"bot's message: {text}"],
        timeout=30_000,
    )
    page.wait_for_timeout(1000)


def assert_inert(page, *selectors):
    page.wait_for_timeout(300)  # let any handler that slipped through fire
    for selector in selectors:
        assert [] == page.locator(selector).evaluate(INERT), selector
    assert (None, []) == (page.evaluate("window.__pwned"), page.dialogs)


def test_html_and_script_in_the_chat_are_stored_literally_and_do_not_run(page, server):
    box = page.locator("#chat-input textarea")
    for payload in PAYLOADS:
        box.fill(payload)
        box.press("Enter")
        wait_for_answer(page, "#chatbot", f"You said: {payload}")
    stored = wait_for_rows(
        server, "SELECT role, content FROM messages ORDER BY id", 2 * len(PAYLOADS)
    )
    expected = [[("user", p), ("assistant", f"You said: {p}")] for p in PAYLOADS]
    assert [row for pair in expected for row in pair] == stored
    assert_inert(page, "#chatbot")


def test_an_edit_with_html_and_script_is_stored_literally_and_does_not_run(page, server):
    box = page.locator("#chat-input textarea")
    box.fill("say something")
    box.press("Enter")
    wait_for_answer(page, "#chatbot", "You said: say something")
    page.get_by_role("button", name="Edit").last.click()
    page.locator("#chatbot textarea.edit-textarea").fill(PAYLOADS[0])
    page.get_by_role("button", name="Submit").click()
    edits = wait_for_rows(server, "SELECT text FROM feedback WHERE kind = 'edit'", 1)
    assert [(PAYLOADS[0],)] == edits
    wait_for_answer(page, "#chatbot", PAYLOADS[0])
    assert_inert(page, "#chatbot")


def test_html_and_script_in_the_arena_are_stored_literally_and_do_not_run(page, server):
    page.get_by_role("tab", name="Arena").click()
    box = page.locator("#arena-input textarea")
    box.fill(PAYLOADS[0])
    box.press("Enter")
    page.locator("#arena-reveal").get_by_text("Which answer is better?").wait_for(timeout=30_000)
    assert_inert(page, "#arena-a", "#arena-b")
    page.locator("#vote-b").click()
    page.locator("#arena-reveal").get_by_text("A was").wait_for()
    battles = rows(
        server,
        "SELECT b.outcome, p.content, a.content FROM battles b"
        " JOIN messages p ON p.id = b.prompt_message_id JOIN messages a ON a.id = b.message_a_id",
    )
    assert [("b", PAYLOADS[0], f"You said: {PAYLOADS[0]}")] == battles
    assert_inert(page, "#arena-a", "#arena-b", "#arena-reveal")
