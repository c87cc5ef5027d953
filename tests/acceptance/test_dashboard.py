"""The web dashboard in a real browser: Debian's headless Chromium driven by Playwright,
against `swarm-engine serve` and an engine on a fresh SQLite home. A ticket created on
the page goes from open to done in its row without a reload; its page shows the step's
log lines as they arrive (htmx SSE over the API's stream); a running ticket is cancelled
from its page and a draft by the bulk action (both confirmed); the fleet page shows the
engine's slots; a screenshot is saved and checked."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.conftest import engine_ready
from tests.support.api import Api, start_api
from tests.support.cli import start_engine, swarm_inproc, wait_until

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "t0ken-for-the-dashboard-test"
FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}
AGENTS = {
    "waits": 'command: "echo first line; while [ ! -e go ]; do sleep 0.05; done; echo second line"',
    "sleeps": 'command: "echo going to sleep; sleep 300"',
}
WAIT_MS = 30_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's), or a skip that says why it cannot run."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -c constraints.txt playwright)")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
        except Error as exc:
            pytest.skip(f"chromium cannot run here: {str(exc).splitlines()[0]}")
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Api]]:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    for name, command in AGENTS.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "agent.yaml").write_text(f"name: {name}\nkind: shell\n{command}\n")
        assert swarm_inproc(home, "agent", "register", str(tmp_path / name)).returncode == 0
    engine: subprocess.Popen[str] = start_engine(home, "--max-vms", "2", **FAST)
    api = start_api(home, token=TOKEN)
    try:
        engine_ready(home, engine)
        yield home, api
    finally:
        api.stop()
        engine.send_signal(signal.SIGTERM)
        try:
            engine.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # still draining a ticket the test left running
            os.killpg(engine.pid, signal.SIGKILL)
            engine.communicate()


def test_the_dashboard_in_a_browser(browser: Any, served: tuple[Path, Api], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    _, api = served
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    context.on("page", lambda p: p.on("dialog", lambda d: d.accept()))  # hx-confirm: yes
    page = context.new_page()

    # without the token a page leads to the login; the token sets an HttpOnly cookie
    page.goto(api.url + "/ui")
    assert page.url.endswith("/ui/login")
    page.goto(f"{api.url}/ui/login?token={TOKEN}")
    assert page.url.endswith("/ui")
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] == TOKEN
    page.evaluate("window.notReloaded = true")

    # create a ticket on the page: its row shows up not done (the step waits for a file)
    page.fill("#create [name=title]", "watched")
    page.fill("#create [name=target]", "agent waits")
    page.click("#create button")
    expect(page.locator("#message")).to_contain_text("ticket 1 created")
    row = page.locator("#ticket-1")
    expect(row).to_have_attribute("data-status", "running")

    # its page: the step's first line arrives while it runs, then the second
    ticket_page = context.new_page()
    ticket_page.goto(api.url + "/ui/tickets/1")
    log = ticket_page.locator("#log")
    expect(log).to_contain_text("first line")
    step = ticket_page.locator("tr.step[data-step=main]")
    expect(step).to_have_attribute("data-status", "running")
    (vm,) = wait_until(lambda: [v for v in api.get("/v1/vms").json() if v["state"] == "busy"],
                       30, "a busy VM")  # fmt: skip
    expect(step).to_contain_text(vm["id"])
    assert "second line" not in log.inner_text()
    (Path(vm["workspace"]) / "go").write_text("")
    expect(log).to_contain_text("second line")
    expect(log).to_contain_text("-- ticket done --")
    expect(step).to_have_attribute("data-status", "done")

    # ... and the list's row went to done by itself, without a reload
    expect(row).to_have_attribute("data-status", "done")
    assert page.evaluate("window.notReloaded") is True

    # cancel a running ticket from its page (confirmed)
    created = api.post("/v1/tickets", json={"title": "sleeper", "agent": "sleeps"})
    assert created.status_code == 201, created.text
    sleeper = created.json()["id"]
    ticket_page.goto(f"{api.url}/ui/tickets/{sleeper}")
    expect(ticket_page.locator("#log")).to_contain_text("going to sleep")
    expect(ticket_page.locator("#ticket-status")).to_have_text("running")
    ticket_page.click("#cancel")
    expect(ticket_page.locator("#message")).to_contain_text("cancel requested")
    expect(ticket_page.locator("#ticket-status")).to_have_text("cancelled")
    expect(ticket_page.locator("#log")).to_contain_text("-- ticket cancelled")
    assert api.get(f"/v1/tickets/{sleeper}").json()["status"] == "cancelled"

    # bulk cancel on the list (confirmed): a draft
    draft = api.post("/v1/tickets", json={"title": "later", "agent": "sleeps", "draft": True})
    draft_id = draft.json()["id"]
    draft_row = page.locator(f"#ticket-{draft_id}")
    expect(draft_row).to_have_attribute("data-status", "draft")
    draft_row.locator("input[name=id]").check()
    page.click("#cancel-checked")
    expect(page.locator("#message")).to_contain_text("cancelled 1")
    expect(draft_row).to_have_attribute("data-status", "cancelled")
    assert page.evaluate("window.notReloaded") is True

    # a filter narrows the rows
    page.check("#filters input[value=done]")
    expect(page.locator("#tickets tbody tr")).to_have_count(1)
    expect(page.locator("#ticket-1")).to_be_visible()

    # hosts and engines with their slots
    fleet = context.new_page()
    fleet.goto(api.url + "/ui/fleet")
    expect(fleet.locator("#hosts tbody tr[data-host]")).to_have_count(1)
    expect(fleet.locator("#hosts td.free")).to_have_text("2")
    expect(fleet.locator("#engines tbody tr")).to_have_count(1)

    shot = tmp_path / "dashboard.png"
    ticket_page.goto(api.url + "/ui/tickets/1")
    expect(ticket_page.locator("#log")).to_contain_text("second line")
    ticket_page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    context.close()
