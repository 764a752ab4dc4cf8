"""In Chromium: *Report* under an answer stores a flag; the Dashboard's admin parts stay
hidden until the admin token is typed."""

from __future__ import annotations

import sqlite3

import pytest

from tests.server_process import running_server
from tests.test_browser import browser, open_page  # noqa: F401, F811 (browser: a shared fixture)

pytestmark = pytest.mark.browser

ADMIN = "a-browser-admin-token-of-at-least-32-characters"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"RLHF_CHAT_AUTH_ADMIN_TOKEN": ADMIN, "RLHF_CHAT_BACKUP_INTERVAL_MINUTES": "0"}
    with running_server(tmp_path_factory.mktemp("security-browser"), env=env) as srv:
        yield srv


def test_report_an_answer_and_the_dashboard_for_admins_only(browser, server):  # noqa: F811
    page = open_page(browser, server)
    box = page.locator("#chat-input textarea")
    box.fill("hello")
    box.press("Enter")
    page.locator("#chatbot").get_by_text("You said:").wait_for(timeout=30_000)
    page.get_by_role("button", name="Feedback").last.click()
    page.locator("#chatbot").get_by_role("button", name="Report").last.click()
    conn = sqlite3.connect(server.data_dir / "chat.db")
    try:
        rows = []
        for _ in range(100):  # written by a queued event: poll until it lands
            rows = conn.execute("SELECT kind FROM feedback").fetchall()
            if rows:
                break
            page.wait_for_timeout(100)
    finally:
        conn.close()
    assert [("flag",)] == rows

    page.get_by_role("tab", name="Dashboard").click()
    page.get_by_text("Model versions").first.wait_for()
    page.get_by_text("Admin").first.click()
    assert not page.locator("#users").is_visible()
    assert not page.locator("#user-shares").is_visible()
    token = page.get_by_label("Admin token")
    token.fill(ADMIN)
    token.press("Enter")
    page.locator("#users").wait_for(state="visible", timeout=30_000)
    assert page.locator("#user-shares").is_visible()
    page.close()
