"""The dashboard through the ASGI app on SQLite and PostgreSQL: sign-in, Observe, controls, CSRF."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

import fleetplane.dashboard
from fleetplane.domain.config_hash import config_hash
from fleetplane.services import webhooks, workspaces
from fleetplane.store.db import Database
from fleetplane.store.models import Org, Runtime, RuntimeTransition, Workspace
from tests.browser import seed
from tests.conftest import Clock, auth, snapshot

OBSERVE = "/dashboard/observe"


@pytest.fixture
def web(client: TestClient) -> TestClient:
    """The app with the dashboard installed (a no-op once app.py installs it itself)."""
    fleetplane.dashboard.ensure_installed(cast(FastAPI, client.app))
    return client


@pytest.fixture
def orgs(database: Database, clock: Clock) -> seed.TwoOrgs:
    return seed.two_orgs(database, now=clock.now)


def sign_in(client: TestClient, email: str, password: str = seed.PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token from the Observe page."""
    form = client.get("/dashboard/login")
    assert form.status_code == 200
    response = client.post(
        "/dashboard/login",
        data={"email": email, "password": password, "csrf_token": seed.csrf_token(form.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == OBSERVE
    page = client.get(OBSERVE)
    assert page.status_code == 200
    return seed.csrf_token(page.text)


def row_html(page: str, workspace_id: str) -> str:
    match = re.search(rf'<tr data-workspace="{workspace_id}".*?</tr>', page, re.S)
    assert match is not None, f"no row for workspace {workspace_id}"
    return match.group(0)


def totals_html(page: str) -> str:
    match = re.search(r'<tr class="totals".*?</tr>', page, re.S)
    assert match is not None
    return match.group(0)


def counts(fragment: str) -> dict[str, int]:
    """State → count from the badges in a piece of the page."""
    return {
        state: int(count)
        for state, count in re.findall(r'data-state="(\w+)" data-count="(\d+)"', fragment)
    }


def agents(page: str) -> list[str]:
    return re.findall(r'<tr data-runtime="\w+" data-agent="([^"]+)"', page)


def assert_no_inline_code(page: str) -> None:
    """Pages work under a CSP without 'unsafe-inline': no inline script, style or handler."""
    assert re.findall(r"<script(?![^>]*\bsrc=)", page) == []
    assert "<style" not in page
    assert re.search(r"\sstyle=", page) is None
    assert re.search(r"\son[a-z]+=", page) is None


def test_signed_out_pages_redirect_to_sign_in(web: TestClient) -> None:
    for path in (OBSERVE, "/dashboard/workspaces/abc?health=stale"):
        response = web.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/dashboard/login?next=%2Fdashboard%2F")
    login = web.get("/dashboard/login")
    assert login.status_code == 200
    assert 'name="csrf_token"' in login.text
    assert 'type="password"' in login.text
    assert login.headers["cache-control"] == "no-store"
    assert_no_inline_code(login.text)


def test_sign_in_wrong_password_and_success(web: TestClient, orgs: seed.TwoOrgs) -> None:
    form = web.get("/dashboard/login?next=/dashboard/workspaces/x")
    token = seed.csrf_token(form.text)
    wrong = web.post(
        "/dashboard/login",
        data={"email": "alice@a.test", "password": "nope nope", "csrf_token": token},
    )
    assert wrong.status_code == 401
    assert "Wrong email or password." in wrong.text
    assert 'value="alice@a.test"' in wrong.text
    assert "fp_session" not in web.cookies
    token = seed.csrf_token(wrong.text)
    right = web.post(
        "/dashboard/login",
        data={
            "email": "Alice@A.test",
            "password": seed.PASSWORD,
            "csrf_token": token,
            "next": "/dashboard/workspaces/x",
        },
        follow_redirects=False,
    )
    assert right.status_code == 303
    assert right.headers["location"] == "/dashboard/workspaces/x"
    cookie = right.headers["set-cookie"]
    assert "fp_session=" in cookie
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    # The session is the API's session: the same cookie reads /api/v1/me.
    assert web.get("/api/v1/me").json()["email"] == "alice@a.test"


def test_next_never_leaves_the_dashboard(web: TestClient, orgs: seed.TwoOrgs) -> None:
    form = web.get("/dashboard/login")
    response = web.post(
        "/dashboard/login",
        data={
            "email": "alice@a.test",
            "password": seed.PASSWORD,
            "csrf_token": seed.csrf_token(form.text),
            "next": "https://evil.example/dashboard/",
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == OBSERVE


def test_sign_in_rotates_the_session_and_sign_out_needs_csrf(
    web: TestClient, orgs: seed.TwoOrgs
) -> None:
    sign_in(web, "alice@a.test")
    first = web.cookies["fp_session"]
    # Signing in again while holding a session (say, one planted by someone else) ends it.
    web.cookies.clear()
    form = web.get("/dashboard/login")
    web.cookies.set("fp_session", first)
    response = web.post(
        "/dashboard/login",
        data={
            "email": "alice@a.test",
            "password": seed.PASSWORD,
            "csrf_token": seed.csrf_token(form.text),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    second = response.cookies["fp_session"]
    assert second != first
    web.cookies.clear()
    web.cookies.set("fp_session", first)
    assert web.get(OBSERVE, follow_redirects=False).status_code == 303
    web.cookies.clear()
    web.cookies.set("fp_session", second)
    csrf = seed.csrf_token(web.get(OBSERVE).text)
    assert web.post("/dashboard/logout", data={"csrf_token": "forged"}).status_code == 403
    assert web.get(OBSERVE).status_code == 200
    out = web.post("/dashboard/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert out.headers["location"] == "/dashboard/login"
    web.cookies.clear()
    web.cookies.set("fp_session", second)
    assert web.get(OBSERVE, follow_redirects=False).status_code == 303


def test_login_form_without_its_token_is_refused(web: TestClient, orgs: seed.TwoOrgs) -> None:
    response = web.post(
        "/dashboard/login", data={"email": "alice@a.test", "password": seed.PASSWORD}
    )
    assert response.status_code == 403
    assert "fp_session" not in web.cookies


def test_throttled_sign_in_shows_a_message(web: TestClient, orgs: seed.TwoOrgs) -> None:
    for _ in range(5):
        form = web.get("/dashboard/login")
        wrong = web.post(
            "/dashboard/login",
            data={
                "email": "bob@b.test",
                "password": "wrong!",
                "csrf_token": seed.csrf_token(form.text),
            },
        )
        assert wrong.status_code == 401
    form = web.get("/dashboard/login")
    throttled = web.post(
        "/dashboard/login",
        data={
            "email": "bob@b.test",
            "password": seed.PASSWORD,
            "csrf_token": seed.csrf_token(form.text),
        },
    )
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    assert "Too many failed sign-ins" in throttled.text


def test_observe_counts_per_workspace_and_totals(web: TestClient, orgs: seed.TwoOrgs) -> None:
    sign_in(web, "alice@a.test")
    page = web.get(OBSERVE).text
    assert counts(row_html(page, orgs.a_mixed.id)) == seed.MIXED_COUNTS
    aligned = counts(row_html(page, orgs.a_aligned.id))
    assert aligned == {
        "connected": 3,
        "stale": 0,
        "dormant": 0,
        "never": 0,
        "aligned": 3,
        "needs_reconcile": 0,
        "upgrade_required": 0,
        "awaiting_sync": 0,
    }
    totals = counts(totals_html(page))
    assert totals == {k: seed.MIXED_COUNTS[k] + aligned[k] for k in aligned}
    assert 'data-total="11"' in totals_html(page)
    # Share aligned: 4 of 8 and 3 of 3, 7 of 11 overall (rounded down).
    assert 'data-share="50%"' in row_html(page, orgs.a_mixed.id)
    assert 'data-share="100%"' in row_html(page, orgs.a_aligned.id)
    assert 'data-share="63%"' in totals_html(page)
    assert_no_inline_code(page)
    # Config revision: number, short hash, relative time with the exact time on hover.
    mixed = row_html(page, orgs.a_mixed.id)
    assert "<b>r2</b>" in mixed
    assert orgs.a_mixed.desired_hash[:8] in mixed
    assert 'title="2026-03-01 12:00:00 UTC"' in mixed
    assert "needs attention" in mixed
    assert "needs attention" not in row_html(page, orgs.a_aligned.id)
    assert "Org Alpha" in page


def test_observe_attention_and_org_filters(web: TestClient, orgs: seed.TwoOrgs) -> None:
    sign_in(web, "alice@a.test")
    attention = web.get(OBSERVE, params={"attention": "1"}).text
    assert f'data-workspace="{orgs.a_mixed.id}"' in attention
    assert f'data-workspace="{orgs.a_aligned.id}"' not in attention
    assert counts(totals_html(attention)) == seed.MIXED_COUNTS
    other_org = web.get(OBSERVE, params={"org": orgs.b_only.org_id}).text
    assert "data-workspace=" not in other_org
    assert "No workspace matches these filters." in other_org


def test_observe_pages_fifty_workspaces_at_a_time(
    web: TestClient, database: Database, clock: Clock
) -> None:
    with database.unit_of_work() as session:
        owner = seed.user(session, "many@a.test", now=clock.now)
        org = seed.org(session, "Many", owner=owner, now=clock.now)
        for index in range(55):
            workspaces.create_workspace(
                session,
                org=org,
                name=f"ws-{index:02d}",
                policy_mode=None,
                dev_override_until=None,
                actor="t",
                now=clock.now,
            )
        seed.workspace(session, org=org, name="ws-99", fleet=seed.ALL_ALIGNED, now=clock.now)
    sign_in(web, "many@a.test")
    first = web.get(OBSERVE).text
    assert first.count("<tr data-workspace=") == 50
    assert "Page 1 of 2" in first
    assert 'data-workspaces="56"' in first
    assert 'data-total="3"' in totals_html(first)  # totals cover every page
    second = web.get(OBSERVE, params={"page": 2}).text
    assert second.count("<tr data-workspace=") == 6
    assert ">ws-99<" in second
    assert web.get(OBSERVE, params={"page": "x"}).status_code == 422


def test_org_isolation(web: TestClient, orgs: seed.TwoOrgs, database: Database) -> None:
    csrf = sign_in(web, "bob@b.test")
    page = web.get(OBSERVE).text
    assert "Beta secret" in page
    assert "Alpha" not in page
    assert orgs.a_mixed.id not in page
    hidden = web.get(f"/dashboard/workspaces/{orgs.a_mixed.id}")
    missing = web.get("/dashboard/workspaces/no-such-workspace")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text == missing.text
    before = snapshot(database)
    runtime_id = orgs.a_mixed.runtime_ids["api-1"]
    for path, data in (
        ("config", {"config": "a: 1\n"}),
        ("api-key", {}),
        ("enrollments", {}),
        ("authority", {"policy_mode": "tighten-only"}),
        (f"runtimes/{runtime_id}/revoke", {}),
    ):
        response = web.post(
            f"/dashboard/workspaces/{orgs.a_mixed.id}/{path}", data={**data, "csrf_token": csrf}
        )
        assert response.status_code == 404, path
    assert snapshot(database) == before


def test_forged_posts_without_the_csrf_token_change_nothing(
    web: TestClient, orgs: seed.TwoOrgs, database: Database
) -> None:
    sign_in(web, "alice@a.test")
    before = snapshot(database)
    base = f"/dashboard/workspaces/{orgs.a_mixed.id}"
    runtime_id = orgs.a_mixed.runtime_ids["api-1"]
    for path in ("config", "api-key", "enrollments", "authority", f"runtimes/{runtime_id}/revoke"):
        missing = web.post(f"{base}/{path}", data={"config": "a: 1\n"})
        wrong = web.post(f"{base}/{path}", data={"config": "a: 1\n", "csrf_token": "x" * 43})
        as_json = web.post(f"{base}/{path}", json={"config": "a: 1\n"})
        assert missing.status_code == wrong.status_code == as_json.status_code == 403, path
        assert "CSRF" in missing.text
    assert snapshot(database) == before


def test_viewer_sees_no_controls_and_cannot_post(
    web: TestClient, orgs: seed.TwoOrgs, database: Database
) -> None:
    csrf = sign_in(web, "vera@a.test")
    observe = web.get(OBSERVE).text
    assert orgs.a_mixed.id in observe
    assert orgs.a_aligned.id not in observe  # a workspace member sees only that workspace
    page = web.get(f"/dashboard/workspaces/{orgs.a_mixed.id}").text
    assert "your access: viewer" in page
    for control in ("<textarea", "Regenerate API key", "/revoke", "/authority", "/enrollments"):
        assert control not in page, control
    assert "lanes:" in page  # the config is shown read-only
    before = snapshot(database)
    base = f"/dashboard/workspaces/{orgs.a_mixed.id}"
    runtime_id = orgs.a_mixed.runtime_ids["api-1"]
    for path, data in (
        ("config", {"config": "a: 1\n"}),
        ("api-key", {}),
        ("enrollments", {}),
        ("authority", {"policy_mode": "tighten-only"}),
        (f"runtimes/{runtime_id}/revoke", {}),
    ):
        response = web.post(f"{base}/{path}", data={**data, "csrf_token": csrf})
        assert response.status_code == 403, path
        assert "needs the workspace" in response.text
    assert snapshot(database) == before


def test_operator_revokes_and_enrolls_but_does_not_edit(
    web: TestClient, orgs: seed.TwoOrgs
) -> None:
    csrf = sign_in(web, "oscar@a.test")
    base = f"/dashboard/workspaces/{orgs.a_mixed.id}"
    page = web.get(base).text
    assert "your access: operator" in page
    assert "/revoke" in page
    assert "Create enrollment token" in page
    assert "<textarea" not in page
    assert "Regenerate API key" not in page
    assert (
        web.post(f"{base}/config", data={"config": "a: 1\n", "csrf_token": csrf}).status_code == 403
    )
    issued = web.post(f"{base}/enrollments", data={"csrf_token": csrf, "max_uses": "3"})
    assert issued.status_code == 200
    assert re.search(r"<code>fp_enr_[\w-]+</code>", issued.text)
    assert "3 uses" in issued.text
    assert "data-refresh" not in issued.text  # a page with a secret never refreshes itself away
    runtime_id = orgs.a_mixed.runtime_ids["worker-1"]
    revoked = web.post(f"{base}/runtimes/{runtime_id}/revoke", data={"csrf_token": csrf})
    assert revoked.status_code == 200
    assert "Runtime revoked" in revoked.text
    assert "worker-1" not in agents(revoked.text)
    assert len(agents(revoked.text)) == len(seed.MIXED_FLEET) - 1


def test_config_editor_shows_yaml_errors_and_saves_revisions(
    web: TestClient, orgs: seed.TwoOrgs
) -> None:
    csrf = sign_in(web, "alice@a.test")
    base = f"/dashboard/workspaces/{orgs.a_aligned.id}"
    page = web.get(base).text
    assert "<textarea" in page
    assert "Operations: Runtime" in page  # the current document, as YAML
    assert_no_inline_code(page)
    broken = "lanes:\n  - name: core\n    wip_limit: [1, 2\nsync: <off>\n"
    error = web.post(f"{base}/config", data={"config": broken, "csrf_token": csrf})
    assert error.status_code == 422
    assert re.search(r"at line \d+, column \d+", error.text)
    assert "line 4" in error.text
    assert "sync: &lt;off&gt;" in error.text  # the text is kept, escaped
    assert "data-refresh" not in error.text
    duplicate = web.post(f"{base}/config", data={"config": "a: 1\na: 2\n", "csrf_token": csrf})
    assert duplicate.status_code == 422
    assert "Map keys must be unique at line 2, column 1" in duplicate.text
    not_a_mapping = web.post(f"{base}/config", data={"config": "- a\n", "csrf_token": csrf})
    assert not_a_mapping.status_code == 422
    assert "must be a mapping" in not_a_mapping.text
    saved = web.post(
        f"{base}/config", data={"config": "sync: off\nlanes: []\n", "csrf_token": csrf}
    )
    assert saved.status_code == 200
    assert "Saved config revision 3" in saved.text
    assert config_hash({"sync": "off", "lanes": []})[:8] in saved.text
    # Every runtime still reports revision 2, so none is aligned any more.
    assert counts(row_html(web.get(OBSERVE).text, orgs.a_aligned.id))["aligned"] == 0
    same = web.post(f"{base}/config", data={"config": "lanes: []\nsync: off\n", "csrf_token": csrf})
    assert "nothing changed" in same.text
    history = web.get(f"/api/v1/workspaces/{orgs.a_aligned.id}/config/revisions").json()
    assert [item["number"] for item in history["items"]] == [3, 2, 1]


def test_api_key_is_shown_once_and_the_old_key_stops(web: TestClient, orgs: seed.TwoOrgs) -> None:
    csrf = sign_in(web, "alice@a.test")
    base = f"/dashboard/workspaces/{orgs.a_mixed.id}"
    first = web.post(f"{base}/api-key", data={"csrf_token": csrf})
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    key = re.search(r"<code>(fp_ws_[\w-]+)</code>", first.text)
    assert key is not None
    body = {"workspace_id": orgs.a_mixed.id, "session_id": "s", "agent_id": "new-1"}
    assert web.post("/api/v1/heartbeat", json=body, headers=auth(key.group(1))).status_code == 200
    web.post(f"{base}/api-key", data={"csrf_token": csrf})
    assert web.post("/api/v1/heartbeat", json=body, headers=auth(key.group(1))).status_code == 401
    assert key.group(1) not in web.get(base).text
    assert "npx lumenflow cloud connect --endpoint https://fleet.test" in web.get(base).text


def test_authority_mode_switch(
    web: TestClient, orgs: seed.TwoOrgs, clock: Clock, database: Database
) -> None:
    csrf = sign_in(web, "alice@a.test")
    base = f"/dashboard/workspaces/{orgs.a_mixed.id}"
    too_far = (clock.now + timedelta(days=8)).strftime("%Y-%m-%dT%H:%M")
    refused = web.post(
        f"{base}/authority",
        data={"policy_mode": "dev-override", "dev_override_until": too_far, "csrf_token": csrf},
    )
    assert refused.status_code == 422
    assert "at most 7 days ahead" in refused.text
    until = (clock.now + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M")
    saved = web.post(
        f"{base}/authority",
        data={"policy_mode": "dev-override", "dev_override_until": until, "csrf_token": csrf},
    )
    assert saved.status_code == 200
    assert "Authority mode saved." in saved.text
    row = row_html(web.get(OBSERVE).text, orgs.a_mixed.id)
    assert "mode-dev-override" in row
    assert "2026-03-01 18:00:00 UTC" in row
    assert "in 6 h" in row
    clock.advance(7 * 3600)  # the override lapses when the workspace is next shown
    row = row_html(web.get(OBSERVE).text, orgs.a_mixed.id)
    assert "mode-authoritative" in row
    audit = web.get(base).text
    assert "workspace.dev_override_lapsed" in audit


def test_workspace_runtime_filters_search_and_paging(
    web: TestClient, orgs: seed.TwoOrgs, database: Database, clock: Clock
) -> None:
    sign_in(web, "alice@a.test")
    base = f"/dashboard/workspaces/{orgs.a_mixed.id}"
    page = web.get(base).text
    assert sorted(agents(page)) == sorted(spec.agent_id for spec in seed.MIXED_FLEET)
    assert "version below full sync" in page
    assert "config revision differs" in page
    assert agents(web.get(base, params={"health": "stale"}).text) == ["worker-1"]
    assert agents(web.get(base, params={"drift": "upgrade_required"}).text) == ["legacy-1"]
    assert sorted(agents(web.get(base, params={"q": "WORKER"}).text)) == ["worker-1", "worker-2"]
    assert web.get(base, params={"health": "sideways"}).status_code == 422
    with database.unit_of_work() as session:
        org = session.get(Org, orgs.a_mixed.org_id)
        assert org is not None
        many = [seed.RuntimeSpec(f"bulk-{n:03d}", 1) for n in range(60)]
        big = seed.workspace(session, org=org, name="Alpha big", fleet=many, now=clock.now)
    first = web.get(f"/dashboard/workspaces/{big.id}", params={"q": "bulk"}).text
    assert len(agents(first)) == 50
    next_link = re.search(r'href="([^"]+cursor=[^"]+)"', first)
    assert next_link is not None
    assert "q=bulk" in next_link.group(1)
    second = web.get(next_link.group(1).replace("&amp;", "&")).text
    assert agents(second) == [f"bulk-{n:03d}" for n in range(50, 60)]


def test_static_files_and_root_redirect(web: TestClient) -> None:
    css = web.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200
    assert ".badge" in css.text
    script = web.get("/dashboard/static/refresh.js")
    assert script.status_code == 200
    assert "data-refresh" in script.text
    root = web.get("/dashboard", follow_redirects=False)
    assert root.status_code == 303
    assert root.headers["location"] == OBSERVE


def test_rollout_progress_and_revisions_behind(
    web: TestClient, orgs: seed.TwoOrgs, clock: Clock
) -> None:
    sign_in(web, "alice@a.test")
    clock.advance(12 * 60)
    base = f"/dashboard/workspaces/{orgs.a_mixed.id}"
    page = web.get(base).text
    assert_no_inline_code(page)
    rollout = web.get(f"/api/v1/workspaces/{orgs.a_mixed.id}/fleet").json()["rollout"]
    on, expected = rollout["onRevision"], rollout["expected"]
    assert expected == len(seed.MIXED_FLEET)
    assert f"<b>r2</b>: {on} of {expected} runtimes on it, rolling out for" in page
    assert re.search(r"rolling out for <time[^>]*>12 min</time>", page)
    assert f'data-on="{on}" data-expected="{expected}"' in page
    assert "aligned" in page
    assert 'class="bar-fill"' in page
    behind = dict(re.findall(r'data-agent="([^"]+)".*?data-behind="(\d*)"', page, re.S))
    assert behind["api-3"] == "1"  # reports revision 1 of 2
    assert behind["api-1"] == "0"
    runtime_id = orgs.a_mixed.runtime_ids["api-1"]
    assert f'href="{base}/runtimes/{runtime_id}"' in page


def test_viewer_sees_no_rollback_and_a_forged_rollback_is_refused(
    web: TestClient, orgs: seed.TwoOrgs, database: Database
) -> None:
    csrf = sign_in(web, "vera@a.test")
    base = f"/dashboard/workspaces/{orgs.a_mixed.id}"
    page = web.get(base).text
    assert "diff with current" in page
    assert "Roll back to" not in page
    assert "/rollback" not in page
    assert "Webhook deliveries" not in page
    before = snapshot(database)
    forged = web.post(f"{base}/rollback", data={"number": "1", "csrf_token": csrf})
    assert forged.status_code == 403
    assert "needs the workspace" in forged.text
    assert web.post(f"{base}/rollback", data={"number": "1"}).status_code == 403
    assert snapshot(database) == before
    # Reading a diff needs only read access.
    diff = web.get(f"{base}/diff?from=1&to=2")
    assert diff.status_code == 200
    assert "<pre" in diff.text
    assert "--- revision 1" in diff.text
    assert "+++ revision 2" in diff.text
    assert_no_inline_code(diff.text)


def test_admin_rolls_back_to_an_earlier_revision(
    web: TestClient, orgs: seed.TwoOrgs, database: Database
) -> None:
    csrf = sign_in(web, "alice@a.test")
    workspace_id = orgs.a_mixed.id
    base = f"/dashboard/workspaces/{workspace_id}"
    page = web.get(base).text
    assert "Roll back to r1" in page
    assert "Roll back to r2" not in page  # the current revision
    assert f'href="{base}/diff?from=1&amp;to=2"' in page
    diff = web.get(f"{base}/diff?from=1&to=2").text
    assert "+  &#34;workspace&#34;: &#34;Alpha prod&#34;" in diff
    rolled = web.post(
        f"{base}/rollback", data={"number": "1", "csrf_token": csrf}, follow_redirects=False
    )
    assert rolled.status_code == 303
    assert rolled.headers["location"] == f"{base}?notice=config_rolled_back&revision=3"
    after = web.get(rolled.headers["location"]).text
    assert "Rolled back: the earlier config is now revision 3." in after
    assert "Roll back to r2" in after
    assert "Roll back to r3" not in after
    history = web.get(f"/api/v1/workspaces/{workspace_id}/config/revisions").json()["items"]
    assert [item["number"] for item in history] == [3, 2, 1]
    assert history[0]["hash"] == history[2]["hash"]
    missing = web.post(f"{base}/rollback", data={"number": "99", "csrf_token": csrf})
    assert missing.status_code == 404


def test_runtime_status_history_page(
    web: TestClient, orgs: seed.TwoOrgs, database: Database, clock: Clock
) -> None:
    runtime_id = orgs.a_mixed.runtime_ids["api-1"]
    now = clock.now
    with database.unit_of_work() as session:
        for to_state, from_state, minutes_ago in (
            ("connected", None, 180),
            ("stale", "connected", 120),
            ("connected", "stale", 108),
        ):
            session.add(
                RuntimeTransition(
                    runtime_id=runtime_id,
                    workspace_id=orgs.a_mixed.id,
                    kind="health",
                    from_state=from_state,
                    to_state=to_state,
                    reason=None,
                    at=now - timedelta(minutes=minutes_ago),
                    detected_at=now - timedelta(minutes=minutes_ago),
                )
            )
    sign_in(web, "vera@a.test")
    path = f"/dashboard/workspaces/{orgs.a_mixed.id}/runtimes/{runtime_id}"
    page = web.get(path)
    assert page.status_code == 200
    assert_no_inline_code(page.text)
    assert "api-1" in page.text
    text = re.sub(r"<[^>]+>", "", page.text)
    assert "stale for 12 min, 2 h ago" in text
    assert "connected for 1 h, 3 h ago" in text
    assert "connected since 1 h, 1 h ago" in text
    assert web.get(f"/dashboard/workspaces/{orgs.a_mixed.id}/runtimes/nope").status_code == 404
    other = orgs.b_only
    assert web.get(f"/dashboard/workspaces/{other.id}/runtimes/{runtime_id}").status_code in (
        403,
        404,
    )


def test_webhook_delivery_log_for_admins(
    web: TestClient, orgs: seed.TwoOrgs, database: Database, clock: Clock
) -> None:
    with database.unit_of_work() as session:
        workspace = session.get(Workspace, orgs.a_mixed.id)
        assert workspace is not None
        hook = webhooks.create_webhook(
            session,
            workspace=workspace,
            url="https://hooks.example/fleet",
            events=[webhooks.ALL_EVENTS],
            secret=None,
            active=True,
            actor="test",
            now=clock.now,
        )
        webhooks.ping_webhook(
            session, workspace=workspace, webhook_id=hook.id, actor="test", now=clock.now
        )
    sign_in(web, "alice@a.test")
    page = web.get(f"/dashboard/workspaces/{orgs.a_mixed.id}").text
    assert "Webhook deliveries" in page
    section = page[page.index('id="webhook-deliveries"') :]
    assert "https://hooks.example/fleet" in section
    assert 'data-status="pending"' in section
    assert 'data-attempts="0"' in section
    assert "<code>ping</code>" in section
    empty = web.get(f"/dashboard/workspaces/{orgs.a_aligned.id}").text
    assert "No webhook delivery yet." in empty


def rollout_of(fragment: str) -> tuple[int, int]:
    """(on the current revision, expected) from a row's or the totals' rollout cell."""
    match = re.search(r'class="rollout-cell"[^>]*data-on="(\d+)" data-expected="(\d+)"', fragment)
    assert match is not None, fragment
    return int(match.group(1)), int(match.group(2))


def test_observe_rollout_progress_climbs_as_runtimes_reconcile(
    web: TestClient, orgs: seed.TwoOrgs, database: Database, clock: Clock
) -> None:
    csrf = sign_in(web, "alice@a.test")
    workspace_id = orgs.a_mixed.id
    fleet_rollout = web.get(f"/api/v1/workspaces/{workspace_id}/fleet").json()["rollout"]
    page = web.get(OBSERVE).text
    # The Observe row shows the fleet surface's own rollout figures.
    assert rollout_of(row_html(page, workspace_id)) == (
        fleet_rollout["onRevision"],
        fleet_rollout["expected"],
    )
    assert rollout_of(row_html(page, orgs.a_aligned.id)) == (3, 3)
    assert "rolling out for" not in row_html(page, orgs.a_aligned.id)  # complete
    assert rollout_of(totals_html(page)) == (fleet_rollout["onRevision"] + 3, 11)

    # A new revision: nobody reports it yet.
    rolled = web.post(
        f"/dashboard/workspaces/{workspace_id}/rollback",
        data={"number": "1", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert rolled.status_code == 303
    with database.read() as session:
        workspace = session.get(Workspace, workspace_id)
        assert workspace is not None
        current = workspace.config_hash
        runtime_ids = sorted(orgs.a_mixed.runtime_ids.values())
        already = session.scalar(
            select(func.count())
            .select_from(Runtime)
            .where(Runtime.workspace_id == workspace_id, Runtime.observed_config_hash == current)
        )
    clock.advance(5 * 60)
    row = row_html(web.get(OBSERVE).text, workspace_id)
    assert rollout_of(row) == (already, len(seed.MIXED_FLEET))
    assert "<b>r3</b>" in row
    assert re.search(r"rolling out for 5 min", row)

    # Runtimes report the new hash one by one: the count climbs to every runtime.
    seen = [already]
    for runtime_id in runtime_ids:
        with database.unit_of_work() as session:
            session.execute(
                update(Runtime).where(Runtime.id == runtime_id).values(observed_config_hash=current)
            )
        on, expected = rollout_of(row_html(web.get(OBSERVE).text, workspace_id))
        assert expected == len(seed.MIXED_FLEET)
        seen.append(on)
    assert seen == sorted(seen)
    assert seen[-1] == len(seed.MIXED_FLEET)
    final = row_html(web.get(OBSERVE).text, workspace_id)
    assert 'aria-label="100% on r3"' in final
    assert "rolling out for" not in final
