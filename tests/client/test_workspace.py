"""workspace.yaml on the runtime side: the shared hash vectors, and writing configs back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetplane.client import (
    dump_workspace_yaml,
    read_workspace_file,
    workspace_config_hash,
    write_workspace_file,
)
from fleetplane.domain.config_hash import config_hash, parse_workspace_yaml
from fleetplane.domain.errors import InvalidDocument
from tests.conftest import VECTORS_DIR


def _hash_cases() -> list[Any]:
    document = json.loads((VECTORS_DIR / "workspace-config-hash.json").read_text("utf-8"))
    return [
        pytest.param(case, id=case["name"])
        for case in document["cases"]
        if case["expect"] == "hash"
    ]


HASH_CASES = _hash_cases()


def test_there_are_vectors() -> None:
    assert len(HASH_CASES) >= 10


@pytest.mark.parametrize("case", HASH_CASES)
def test_hash_of_text_and_of_file_match_the_vector(case: dict[str, Any], tmp_path: Path) -> None:
    assert case["sha256"] == hashlib.sha256(case["canonical_json"].encode()).hexdigest()
    assert workspace_config_hash(case["yaml"]) == case["sha256"]
    file = tmp_path / "workspace.yaml"
    file.write_text(case["yaml"], encoding="utf-8")
    assert workspace_config_hash(file) == case["sha256"]
    assert workspace_config_hash(str(file)) == case["sha256"]


@pytest.mark.parametrize("case", HASH_CASES)
def test_written_config_reproduces_the_vector_hash(case: dict[str, Any], tmp_path: Path) -> None:
    document = parse_workspace_yaml(case["yaml"])
    written = write_workspace_file(tmp_path / "nested" / "workspace.yaml", document)
    assert written == case["sha256"]
    assert workspace_config_hash(tmp_path / "nested" / "workspace.yaml") == case["sha256"]
    assert [p.name for p in (tmp_path / "nested").iterdir()] == ["workspace.yaml"]


def test_yaml_output_is_readable_yaml_and_quotes_what_would_change_type() -> None:
    document = {
        "sync": "on",
        "answer": "yes",
        "count": "12",
        "ratio": ".5e3",
        "nothing": "null",
        "empty": "",
        "lanes": [{"name": "Framework: Core", "wip_limit": 2}],
        "enabled": True,
    }
    text = dump_workspace_yaml(document)
    assert "sync: on\n" in text
    assert 'count: "12"\n' in text
    assert 'ratio: ".5e3"\n' in text
    assert 'nothing: "null"\n' in text
    assert "  - name: 'Framework: Core'\n    wip_limit: 2\n" in text
    assert parse_workspace_yaml(text) == document


def test_key_order_is_kept_because_equal_collating_keys_hash_by_order() -> None:
    # "e" + combining acute and the precomposed "é" collate equal: document order decides.
    document = {"e\u0301": 1, "\u00e9": 2, "z": 3, "a": 4}
    text = dump_workspace_yaml(document)
    assert list(parse_workspace_yaml(text)) == list(document)
    assert config_hash(parse_workspace_yaml(text)) == config_hash(document)
    assert config_hash(document) != config_hash(dict(reversed(document.items())))


class Label(str):
    """A str subclass: JSON writes it, ruamel's safe representer refuses it."""

    __slots__ = ()


def test_a_document_yaml_cannot_represent_falls_back_to_json() -> None:
    text = dump_workspace_yaml({"name": Label("core"), "on": "off"})
    assert text == '{\n  "name": "core",\n  "on": "off"\n}\n'
    assert parse_workspace_yaml(text) == {"name": "core", "on": "off"}


def test_a_document_without_a_faithful_yaml_form_is_refused() -> None:
    # DEL must be escaped in YAML; JSON leaves it raw, and ruamel cannot write Label.
    with pytest.raises(ValueError, match="no YAML form"):
        dump_workspace_yaml({"key": Label("\x7f")})
    with pytest.raises(TypeError):
        dump_workspace_yaml({"when": object()})


def test_read_workspace_file(tmp_path: Path) -> None:
    file = tmp_path / "workspace.yaml"
    assert read_workspace_file(file) is None
    file.write_text("control_plane:\n  project_id: ws-1\n", encoding="utf-8")
    assert read_workspace_file(file) == {"control_plane": {"project_id": "ws-1"}}
    file.write_text("a: 1\na: 2\n", encoding="utf-8")
    with pytest.raises(InvalidDocument):
        read_workspace_file(file)


def test_a_missing_path_string_is_hashed_as_yaml_text() -> None:
    assert workspace_config_hash("no-such-file.yaml") == config_hash("no-such-file.yaml")


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "on",
            "off",
            "yes",
            "~",
            "0x1F",
            "0o17",
            "+1",
            "1e3",
            ".inf",
            "-.5",
            "#",
            "- a",
            "a: b",
            " x",
            "é",
        ]
    )
)
json_documents = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_documents, max_size=6))
def test_any_json_config_round_trips_through_the_written_file(document: dict[str, Any]) -> None:
    text = dump_workspace_yaml(document)
    assert config_hash(parse_workspace_yaml(text)) == config_hash(document)
