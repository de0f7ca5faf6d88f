"""API fuzzing (CI size): every operation of /api/v1/openapi.json, generated positive and negative
inputs, with an operator token, a workspace key and no credential: no 5xx, and every response
has a documented status, content type and body schema. `bench/fuzz.py` runs the larger size."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fleetplane.api.app import create_app
from fleetplane.services.fleet import encode_cursor
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from tests.conftest import ADMIN, BOOTSTRAP_TOKEN, Clock, make_workspace
from tests.reliability.fuzzing import fuzz_app, load_schema, operations

EXAMPLES = int(os.environ.get("FLEETPLANE_FUZZ_EXAMPLES", "4"))


@pytest.fixture
def fuzz_client(sqlite_database: Database) -> Iterator[TestClient]:
    """The app with server errors answered as 500s (as uvicorn would), not raised."""
    settings = Settings(
        database_url=sqlite_database.url,
        public_url="https://fleet.test",
        bootstrap_admin_token=BOOTSTRAP_TOKEN,
        max_body_bytes=64 * 1024,
    )
    app = create_app(settings, database=sqlite_database, clock=Clock())
    with TestClient(app, base_url="https://fleet.test", raise_server_exceptions=False) as client:
        yield client


def test_every_operation_answers_within_its_documented_contract(fuzz_client: TestClient) -> None:
    report = fuzz_app(fuzz_client, max_examples=EXAMPLES, seed=20260301)
    assert report.failures == [], "\n\n".join(report.failures)
    assert report.server_error_count == 0
    documented = len(operations(load_schema(fuzz_client)))
    assert report.operations == documented >= 50
    # Each case goes out with three credentials; some statuses must be the handlers' own.
    assert report.requests >= 3 * documented
    assert report.statuses[401] > 0
    assert sum(n for status, n in report.statuses.items() if 200 <= status < 300) > 0
    assert report.statuses[422] > 0


def test_the_schema_documents_the_error_body(fuzz_client: TestClient) -> None:
    document = fuzz_client.get("/api/v1/openapi.json").json()
    error = document["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]
    for path, methods in document["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in methods.items():
            for status in ("401", "422", "429", "503"):
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}, (
                    method,
                    path,
                    status,
                )


def test_found_by_fuzzing_an_enrollment_expiry_beyond_any_date_is_refused(
    fuzz_client: TestClient,
) -> None:
    """Regression: `expiresInSeconds` of 464783514922438 overflowed timedelta into a 500."""
    ws = make_workspace(fuzz_client)
    for seconds in (464_783_514_922_438, 10**30):
        answer = fuzz_client.post(
            f"/api/v1/workspaces/{ws.workspace_id}/enrollments",
            json={"expiresInSeconds": seconds},
            headers=ADMIN,
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] in ("invalid_expiry", "validation_failed")


BIG_NUMBERS = [2**31, 2**63, 10**30]


@pytest.mark.parametrize("number", BIG_NUMBERS)
def test_found_by_fuzzing_numbers_beyond_the_database_columns_are_refused(
    client: TestClient, number: int
) -> None:
    """Regression: a revision number or cursor past the column's range (2^31 on PostgreSQL,
    2^63 on SQLite) reached the database and came back as a 500 (DataError, OverflowError)."""
    ws = make_workspace(client)
    base = f"/api/v1/workspaces/{ws.workspace_id}"
    cursor = encode_cursor([number])
    answers = {
        "rollback": client.post(f"{base}/config/rollback", json={"number": number}, headers=ADMIN),
        "revision": client.get(f"{base}/config/revisions/{number}", headers=ADMIN),
        "diff": client.get(f"{base}/config/diff", params={"from": 1, "to": number}, headers=ADMIN),
        "revisions page": client.get(
            f"{base}/config/revisions", params={"cursor": cursor}, headers=ADMIN
        ),
        "audit page": client.get(f"{base}/audit", params={"cursor": cursor}, headers=ADMIN),
    }
    for name, answer in answers.items():
        assert answer.status_code in (200, 404, 422), (name, answer.status_code, answer.text[:200])
        if answer.status_code != 200:
            assert answer.json()["error"]["code"], name
