"""The dashboard in headless Chromium against a real server (SQLite; see conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from fleetplane.services import demo
from tests.browser import seed
from tests.browser.conftest import VIEWPORT, LiveServer, sign_in
from tests.conftest import snapshot

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def badge(workspace_id: str, state: str) -> str:
    """The CSS selector of one count badge in a workspace's Observe row."""
    return f'tr[data-workspace="{workspace_id}"] .badge[data-state="{state}"]'


def test_sign_in_and_observe_shows_the_seeded_counts(page: Page, live_server: LiveServer) -> None:
    orgs = seed.two_orgs(live_server.database, now=live_server.clock.now)
    sign_in(page, "alice@a.test")
    expect(page.get_by_role("heading", name="Observe")).to_be_visible()
    for state, count in seed.MIXED_COUNTS.items():
        located = page.locator(badge(orgs.a_mixed.id, state))
        expect(located).to_have_attribute("data-count", str(count))
        # The badge says what it counts in words, not only in colour.
        expect(located).to_have_text(f"{state.replace('_', ' ')} {count}")
    aligned_cell = 'td[data-label="Aligned"] .pct'
    expect(page.locator(f'tr[data-workspace="{orgs.a_mixed.id}"] {aligned_cell}')).to_have_text(
        "50%"
    )
    totals = page.locator("tr.totals")
    expect(totals.locator('.badge[data-state="aligned"]')).to_have_attribute("data-count", "7")
    expect(totals.locator(aligned_cell)).to_have_text("63%")
    # Rollout of the current revision: every runtime of the all-aligned workspace is on it.
    rollout = page.locator(f'tr[data-workspace="{orgs.a_aligned.id}"] .rollout-line')
    expect(rollout).to_be_visible()
    expect(rollout.locator(".pct")).to_have_text("100%")
    expect(rollout).to_contain_text("3 of 3 on it")
    # The exact time of the config revision is on hover.
    revision_time = page.locator(f'tr[data-workspace="{orgs.a_mixed.id}"] .revision time')
    expect(revision_time).to_have_attribute("title", "2026-03-01 12:00:00 UTC")


def test_a_user_of_org_a_never_sees_org_b(
    page: Page, browser: Browser, live_server: LiveServer
) -> None:
    orgs = seed.two_orgs(live_server.database, now=live_server.clock.now)
    sign_in(page, "alice@a.test")
    expect(page.locator("#observe")).to_contain_text("Alpha prod")
    content = page.content()
    assert "Beta" not in content
    assert orgs.b_only.id not in content
    expect(page.locator("select#org option")).to_have_text(["All orgs", "Org Alpha"])
    response = page.goto(f"/dashboard/workspaces/{orgs.b_only.id}")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    other = browser.new_context(viewport=VIEWPORT, base_url=live_server.url)
    try:
        bob = other.new_page()
        sign_in(bob, "bob@b.test")
        expect(bob.locator("#observe")).to_contain_text("Beta secret")
        assert "Alpha" not in bob.content()
    finally:
        other.close()


def test_viewer_sees_no_controls_and_forged_posts_are_refused(
    page: Page, live_server: LiveServer
) -> None:
    orgs = seed.two_orgs(live_server.database, now=live_server.clock.now)
    sign_in(page, "vera@a.test")
    page.get_by_role("link", name="Alpha prod").click()
    expect(page.get_by_text("your access: viewer")).to_be_visible()
    expect(page.locator("textarea")).to_have_count(0)
    expect(page.get_by_role("button", name="Regenerate API key")).to_have_count(0)
    expect(page.get_by_role("button", name="Revoke")).to_have_count(0)
    expect(page.get_by_role("button", name="Save mode")).to_have_count(0)
    expect(page.get_by_role("button", name="Create enrollment token")).to_have_count(0)
    csrf = page.locator('form[action="/dashboard/logout"] input[name="csrf_token"]')
    token = csrf.get_attribute("value")
    assert token
    before = snapshot(live_server.database)
    target = f"/dashboard/workspaces/{orgs.a_mixed.id}"
    runtime_id = orgs.a_mixed.runtime_ids["api-1"]
    # The viewer's own cookie rides along (page.request shares the profile's cookies).
    for path in ("api-key", "config", "authority", f"runtimes/{runtime_id}/revoke"):
        fields: dict[str, str | float | bool] = {"config": "x: 1\n", "policy_mode": "tighten-only"}
        missing = page.request.post(f"{target}/{path}", form=fields)
        wrong = page.request.post(f"{target}/{path}", form={**fields, "csrf_token": "forged"})
        assert missing.status == wrong.status == 403, path
        assert "CSRF" in missing.text()
        right_token = page.request.post(f"{target}/{path}", form={**fields, "csrf_token": token})
        assert right_token.status == 403, path
        assert "needs the workspace" in right_token.text()
    assert snapshot(live_server.database) == before


def test_editing_the_config_drops_aligned_on_the_next_refresh(
    context: BrowserContext, live_server: LiveServer
) -> None:
    orgs = seed.two_orgs(live_server.database, now=live_server.clock.now)
    observe = context.new_page()
    observe.clock.install()  # lets the test move the 15 s refresh timer on
    sign_in(observe, "alice@a.test")
    observe.goto(f"/dashboard/observe?org={orgs.a_aligned.org_id}")
    aligned = observe.locator(badge(orgs.a_aligned.id, "aligned"))
    needs = observe.locator(badge(orgs.a_aligned.id, "needs_reconcile"))
    expect(aligned).to_have_attribute("data-count", "3")
    editor = context.new_page()
    editor.goto(f"/dashboard/workspaces/{orgs.a_aligned.id}")
    editor.locator("textarea#config-text").fill("lanes:\n  - name: core\n    wip_limit: 5\n")
    editor.get_by_role("button", name="Save as revision 3").click()
    expect(editor.get_by_role("status")).to_contain_text("Saved config revision 3")
    expect(editor.locator(".runtimes .badge.drift-needs_reconcile")).to_have_count(3)
    # Nothing changed on the open Observe page until its refresh runs ...
    expect(aligned).to_have_attribute("data-count", "3")
    observe.clock.run_for(16_000)
    # ... which swaps in fresh content, keeping the URL and its filter.
    expect(aligned).to_have_attribute("data-count", "0")
    expect(needs).to_have_attribute("data-count", "3")
    assert observe.url.endswith(f"?org={orgs.a_aligned.org_id}")
    expect(observe.locator("tr[data-workspace]")).to_have_count(2)


def test_a_yaml_error_is_shown_with_its_line(page: Page, live_server: LiveServer) -> None:
    orgs = seed.two_orgs(live_server.database, now=live_server.clock.now)
    sign_in(page, "alice@a.test")
    page.goto(f"/dashboard/workspaces/{orgs.a_mixed.id}")
    broken = "lanes:\n  - name: core\n  wip_limit: 5\n"
    page.locator("textarea#config-text").fill(broken)
    page.get_by_role("button", name="Save as revision 3").click()
    error = page.locator("#config-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("at line 3, column 3")
    expect(error.locator(".excerpt")).to_contain_text("3 |   wip_limit: 5")
    expect(page.locator("textarea#config-text")).to_have_value(broken)
    # Nothing was stored: the workspace still wants revision 2.
    page.goto(f"/dashboard/workspaces/{orgs.a_mixed.id}")
    expect(page.get_by_role("button", name="Save as revision 3")).to_be_visible()


def test_revoking_a_runtime_removes_it(page: Page, live_server: LiveServer) -> None:
    orgs = seed.two_orgs(live_server.database, now=live_server.clock.now)
    sign_in(page, "oscar@a.test")
    page.goto(f"/dashboard/workspaces/{orgs.a_mixed.id}")
    row = page.locator('tr[data-agent="api-3"]')
    expect(row).to_have_count(1)
    expect(page.locator("#runtimes [data-total]")).to_have_text("8")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status")).to_contain_text("Runtime revoked")
    expect(row).to_have_count(0)
    expect(page.locator("#runtimes [data-total]")).to_have_text("7")
    expect(page.locator("#audit")).to_contain_text("runtime.revoke")


def test_pages_work_with_javascript_off(browser: Browser, live_server: LiveServer) -> None:
    orgs = seed.two_orgs(live_server.database, now=live_server.clock.now)
    context = browser.new_context(
        viewport=VIEWPORT,
        base_url=live_server.url,
        java_script_enabled=False,
    )
    try:
        page = context.new_page()
        sign_in(page, "alice@a.test")
        page.get_by_label("Only workspaces that need attention").check()
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("tr[data-workspace]")).to_have_count(1)
        assert "attention=1" in page.url
        page.get_by_role("link", name="Alpha prod").click()
        page.get_by_label("Health").select_option("stale")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("tr[data-agent]")).to_have_count(1)
        expect(page.locator("tr[data-agent]")).to_contain_text("worker-1")
        # Revoking without the confirmation script still works.
        page.locator('tr[data-agent="worker-1"]').get_by_role("button", name="Revoke").click()
        expect(page.get_by_role("status")).to_contain_text("Runtime revoked")
        assert orgs.a_mixed.id in page.url
    finally:
        context.close()


def test_screenshots_of_the_demo_fleet(page: Page, live_server: LiveServer) -> None:
    with live_server.database.unit_of_work() as session:
        login = demo.seed(session, now=live_server.clock.now)
    sign_in(page, login.email, login.password)
    expect(page.locator("tr[data-workspace]")).to_have_count(3)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "observe.png"))
    page.get_by_role("link", name="Production").click()
    expect(page.locator("tr[data-agent]")).to_have_count(8)
    page.screenshot(path=str(SCREENSHOTS / "workspace.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/dashboard/observe")
    page.screenshot(path=str(SCREENSHOTS / "observe-narrow.png"), full_page=True)
