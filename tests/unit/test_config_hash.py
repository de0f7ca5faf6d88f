"""Workspace config hash: shared vectors, YAML 1.2 core rules, limits and canonical JSON."""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import re
import threading
import types
from collections.abc import Iterator
from typing import Any

import icu
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from fleetplane.domain.config_hash import (
    DEFAULT_MAX_DEPTH,
    canonical_json,
    config_hash,
    hash_workspace_yaml,
    parse_workspace_yaml,
)
from fleetplane.domain.errors import InvalidDocument
from tests.conftest import VECTORS_DIR

MAX_SAFE_INTEGER = 2**53


def _hash_cases() -> list[Any]:
    document = json.loads((VECTORS_DIR / "workspace-config-hash.json").read_text("utf-8"))
    return [pytest.param(case, id=case["name"]) for case in document["cases"]]


def _value_of(scalar: str) -> Any:
    document = parse_workspace_yaml(f"v: {scalar}\n")
    return document["v"]


def _error(text: str, **limits: int) -> InvalidDocument:
    with pytest.raises(InvalidDocument) as info:
        parse_workspace_yaml(text, **limits)
    return info.value


# ------------------------------------------------------------------------------------------
# Reference vectors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _hash_cases())
def test_reference_vector(case: dict[str, Any]) -> None:
    assert case["expect"] in {"hash", "reject"}
    if case["expect"] == "reject":
        error = _error(case["yaml"])
        assert error.code == "invalid_document"
        assert error.details == {"line": error.line, "column": error.column}
        reported = re.search(r"at line (\d+), column (\d+)", case.get("error_from_reference", ""))
        if reported is not None:
            assert (error.line, error.column) == (int(reported[1]), int(reported[2]))
        with pytest.raises(InvalidDocument):
            hash_workspace_yaml(case["yaml"])
        return
    value = parse_workspace_yaml(case["yaml"])
    assert canonical_json(value) == case["canonical_json"]
    assert config_hash(value) == case["sha256"]
    assert hash_workspace_yaml(case["yaml"]) == case["sha256"]


def test_vector_file_is_self_consistent() -> None:
    cases = [param.values[0] for param in _hash_cases()]
    assert cases
    for case in cases:
        if case["expect"] == "hash":
            digest = hashlib.sha256(case["canonical_json"].encode("utf-8")).hexdigest()
            assert digest == case["sha256"], case["name"]


# ------------------------------------------------------------------------------------------
# YAML 1.2 core schema, as the runtime resolves it
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        ("on", "on"),
        ("off", "off"),
        ("yes", "yes"),
        ("N", "N"),
        ("True", True),
        ("FALSE", False),
        ("tRUE", "tRUE"),
        ("~", None),
        ("Null", None),
        ("", None),
        ("nULL", "nULL"),
        ("42", 42),
        ("+3", 3),
        ("-7", -7),
        ("007", 7),
        ("0o17", 15),
        ("0o18", "0o18"),
        ("0x1F", 31),
        ("0X1F", "0X1F"),
        ("-0x1F", "-0x1F"),
        ("1_000", "1_000"),
        ("0b101", "0b101"),
        ("1.", 1.0),
        (".5", 0.5),
        ("+.5", 0.5),
        ("-1.25", -1.25),
        ("1e3", 1000.0),
        ("1E+3", 1000.0),
        (".5e-1", 0.05),
        ("1.e2", 100.0),
        ("e3", "e3"),
        ("1e", "1e"),
        (".", "."),
        (".inf", math.inf),
        ("+.Inf", math.inf),
        ("-.INF", -math.inf),
        ("2026-01-01", "2026-01-01"),
        ("12:30:00", "12:30:00"),
        ("'42'", "42"),
        ('"true"', "true"),
        ("|\n  42\n", "42\n"),
        ("'~'", "~"),
        ("!!int '0x1F'", 31),
        ('!!int "12"', 12),
        ("!!int abc", "abc"),
        ("!!float 1", "1"),
        ("!!float '1.5'", 1.5),
        ("!!float .inf", math.inf),
        ("!!bool yes", "yes"),
        ("!!bool 'true'", True),
        ("!!null ''", None),
        ("!!null x", "x"),
        ("!!str true", "true"),
        ("!!str 12", "12"),
        ("! 12", "12"),
        ("!local 3", "3"),
        ("!!map x", "x"),
    ],
)
def test_scalar_resolution(scalar: str, expected: Any) -> None:
    value = _value_of(scalar)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("scalar", [".nan", ".NaN", ".NAN", "!!float .nan"])
def test_nan_scalars(scalar: str) -> None:
    value = _value_of(scalar)
    assert isinstance(value, float)
    assert math.isnan(value)
    assert canonical_json(value) == "null"


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        ("9" * 500, math.inf),
        ("-" + "9" * 500, -math.inf),
        ("+" + "0" * 1000 + "12", 12),
        ("0x" + "F" * 300, int("F" * 300, 16)),
        ("123456789012345678901", 123456789012345678901),
    ],
)
def test_long_integers(scalar: str, expected: int | float) -> None:
    assert _value_of(scalar) == expected


def test_integers_beyond_double_range_hash_as_null() -> None:
    document = parse_workspace_yaml(f"a: {'9' * 500}\nb: 0x{'F' * 300}\nc: -{'1' * 400}\n")
    assert canonical_json(document) == '{"a":null,"b":null,"c":null}'


def test_merge_key_is_an_ordinary_key_and_aliases_are_copies() -> None:
    document = parse_workspace_yaml(
        "base: &base {x: 1, list: [1, 2]}\nderived:\n  <<: *base\n  z: 3\nname: &n hi\nother: *n\n"
    )
    assert document == {
        "base": {"x": 1, "list": [1, 2]},
        "derived": {"<<": {"x": 1, "list": [1, 2]}, "z": 3},
        "name": "hi",
        "other": "hi",
    }
    assert document["derived"]["<<"] is not document["base"]
    assert document["derived"]["<<"]["list"] is not document["base"]["list"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("# only a comment\n", None),
        ("---\n", None),
        ("--- |\n  text\n", "text\n"),
        ("hello\n", "hello"),
        ("- b\n- a\n", ["b", "a"]),
        ("%YAML 1.2\n---\na: yes\n", {"a": "yes"}),
        ("a: 1\n...\n", {"a": 1}),
        ('k: "\\ud83d\\ude80 go"\n', {"k": "\U0001f680 go"}),
        ('"\\ud83d\\ude80": 1\n', {"\U0001f680": 1}),
        ('k: "\\ud800x"\n', {"k": "\ud800x"}),
        ("__proto__: 1\nconstructor: 2\n", {"__proto__": 1, "constructor": 2}),
        ("? a\n", {"a": None}),
        ("{a, b: }\n", {"a": None, "b": None}),
        ("a: !!set [x, y]\n", {"a": ["x", "y"]}),
        ("a: !custom {b: 1}\nc: !!str [d]\n", {"a": {"b": 1}, "c": ["d"]}),
    ],
)
def test_documents(text: str, expected: Any) -> None:
    assert parse_workspace_yaml(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: x\u2028y\n", {"a": "x\u2028y"}),
        ("a: 'x\x85y'\n", {"a": "x\x85y"}),
        ('a: "x\u2029"\n', {"a": "x\u2029"}),
        ("a: 1 # comment\x85b: 2\n", {"a": 1}),
        (
            "a: x\x85\nb: '\ue000'\nc: \"\\ue001\\N\"\n",
            {"a": "x\x85", "b": "\ue000", "c": "\ue001\x85"},
        ),
        ('a: "\\L\\P"\n', {"a": "\u2028\u2029"}),
    ],
)
def test_nel_ls_ps_are_ordinary_characters_in_yaml_1_2(text: str, expected: Any) -> None:
    assert parse_workspace_yaml(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{?x: ?y}\n", {"?x": "?y"}),
        ("[?x, -x, :x, -1]\n", ["?x", "-x", ":x", -1]),
        ("{:x}\n", {":x": None}),
        ("{k: :x, 'j': :y}\n", {"k": ":x", "j": ":y"}),
        ("{a:b: c}\n", {"a:b": "c"}),
        ('["a":1]\n', [{"a": 1}]),
        ('{"a":1, \'b\':[2], "c" \t:3}\n', {"a": 1, "b": [2], "c": 3}),
        ("{? x: 1}\n", {"x": 1}),
        ("[? x : 1]\n", [{"x": 1}]),
        ("? x\n: y\n", {"x": "y"}),
        ("?x: 1\n", {"?x": 1}),
        ("- -x\n- :x\n", ["-x", ":x"]),
    ],
)
def test_flow_indicators_follow_yaml_1_2(text: str, expected: Any) -> None:
    assert parse_workspace_yaml(text) == expected


def test_documents_leaving_no_private_use_character_free_are_refused() -> None:
    text = "a: '" + "".join(chr(point) for point in range(0xE000, 0xF900)) + "\x85'\n"
    assert _error(text).line is None
    assert len(parse_workspace_yaml(text[:-3] + "'\n")["a"]) == 0xF900 - 0xE000


def test_non_string_keys_become_js_property_names() -> None:
    document = parse_workspace_yaml(
        "1: a\ntrue: b\nFalse: c\nnull: d\n1.5: e\n0x10: f\n1e21: g\n.inf: h\n-.inf: i\n"
        ".nan: j\n-0: k\n9007199254740993: l\n1e-7: m\n0o17: n\n+12: o\n2.50: p\n"
    )
    # null becomes "" (the runtime's yaml package), every other scalar String(key).
    assert document == {
        "1": "a",
        "true": "b",
        "false": "c",
        "": "d",
        "1.5": "e",
        "16": "f",
        "1e+21": "g",
        "Infinity": "h",
        "-Infinity": "i",
        "NaN": "j",
        "0": "k",
        "9007199254740992": "l",
        "1e-7": "m",
        "15": "n",
        "12": "o",
        "2.5": "p",
    }
    assert all(isinstance(key, str) for key in document)
    assert canonical_json(document) == (
        '{"0":"k","1":"a","12":"o","15":"n","16":"f","":"d","-Infinity":"i","1.5":"e",'
        '"1e-7":"m","1e+21":"g","2.5":"p","9007199254740992":"l","false":"c","Infinity":"h",'
        '"NaN":"j","true":"b"}'
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1: a\n'1': b\n", {"1": "b"}),
        ("null: a\n'': b\n", {"": "b"}),
        ("true: a\n'true': b\n", {"true": "b"}),
        (".nan: a\n.NaN: b\n", {"NaN": "b"}),
        ("&k x: 1\n*k : 2\n", {"x": 2}),
        ("a: &k x\n*k : 2\nx: 3\n", {"a": "x", "x": 3}),
    ],
)
def test_keys_that_only_collide_after_conversion_overwrite(text: str, expected: Any) -> None:
    assert parse_workspace_yaml(text) == expected


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("a: 1\na: 2\n", 2, 1),
        ("a: 1\nb: 2\na: 3\n", 3, 1),
        ("x:\n  k: 1\n  k: 2\n", 3, 3),
        ("{a: 1, a: 2}\n", 1, 8),
        ("1: a\n1.0: b\n", 2, 1),
        ("16: a\n0x10: b\n", 2, 1),
        ("null: a\n~: b\n", 2, 1),
        ("true: a\nTrue: b\n", 2, 1),
        ("0: a\n-0: b\n", 2, 1),
        ("9007199254740993: a\n9007199254740992: b\n", 2, 1),
        ("'a': 1\n\"a\": 2\n", 2, 1),
        ("!!str 1: a\n'1': b\n", 2, 1),
    ],
)
def test_duplicate_keys_are_rejected_at_the_second_key(text: str, line: int, column: int) -> None:
    error = _error(text)
    assert (error.line, error.column) == (line, column)
    assert "unique" in error.message


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("a:\n\tb: 1\n", 2, 1, "cannot start any token"),
        ("a: [1, 2\n", 2, 1, "expected ','"),
        ("a: 1\n b: 2\n  c: 3\n", 2, 3, "not allowed"),
        ("a: 'open\n", 2, 1, "end of stream"),
        ("a: 1\nb: \x01x\n", 2, 4, "#x0001"),
        ("a: 1\n---\nb: 2\n", 2, 1, "multiple documents"),
        ("%YAML 1.1\n---\na: yes\n", 2, 1, "version 1.1"),
        ("a: *nowhere\n", 1, 4, "Unresolved alias"),
        ("a: &x [1, *x]\n", 1, 11, "Recursive alias"),
        ("a: !!binary aGk=\n", 1, 4, "binary"),
        ("a: !!timestamp 2001-01-01\n", 1, 4, "timestamp"),
        ("a: !!set {x, y}\n", 1, 4, "set"),
        ("a: !!omap [x: 1]\n", 1, 4, "omap"),
        ("a: !!pairs [x: 1]\n", 1, 4, "pairs"),
        ("a: !x!foo 1\n", 1, 4, "tag handle"),
        ("? [a]\n: 1\n", 1, 3, "mapping keys"),
        ("{[a]: 1}\n", 1, 2, "mapping keys"),
        ("c: &c {k: v}\n*c : 2\n", 2, 1, "mapping keys"),
        ("[{a: 1}:x]\n", 1, 2, "mapping keys"),
        ("[a:]\n", 1, 2, "ending in ':'"),
        ("{a: [b:]}\n", 1, 6, "ending in ':'"),
        ("[-]\n", 1, 2, "cannot start any token"),
        ("[a, :]\n", 1, 5, "node content"),
    ],
)
def test_errors_carry_line_and_column(text: str, line: int, column: int, fragment: str) -> None:
    error = _error(text)
    assert (error.line, error.column) == (line, column)
    assert fragment.lower() in error.message.lower()
    assert f"at line {line}, column {column}" in error.message


def test_parser_errors_without_a_position(monkeypatch: pytest.MonkeyPatch) -> None:
    def markless(self: YAML, stream: str) -> Iterator[Any]:
        raise MarkedYAMLError(problem="broken stream")
        yield  # pragma: no cover

    def unmarked(self: YAML, stream: str) -> Iterator[Any]:
        raise YAMLError("opaque failure")
        yield  # pragma: no cover

    monkeypatch.setattr(YAML, "parse", markless)
    error = _error("a: 1\n")
    assert (error.message, error.line, error.column) == ("Broken stream", None, None)
    monkeypatch.setattr(YAML, "parse", unmarked)
    error = _error("a: 1\n")
    assert (error.message, error.line, error.column) == ("opaque failure", None, None)


# ------------------------------------------------------------------------------------------
# Abuse limits
# ------------------------------------------------------------------------------------------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_default_depth_limit() -> None:
    value = parse_workspace_yaml(_nested(DEFAULT_MAX_DEPTH))
    assert canonical_json(value) == _nested(DEFAULT_MAX_DEPTH)
    error = _error(_nested(DEFAULT_MAX_DEPTH + 1))
    assert (error.line, error.column) == (1, DEFAULT_MAX_DEPTH + 1)
    assert "deeper" in error.message


def test_very_deep_document_is_refused_without_recursion(parser_events: list[int]) -> None:
    error = _error(_nested(200_000))
    assert error.column == DEFAULT_MAX_DEPTH + 1
    # Refused at the first collection past the limit: stream and document start, then one
    # event per level; the other 399,935 brackets are never scanned into events.
    assert parser_events == [2 + DEFAULT_MAX_DEPTH + 1]


def test_custom_depth_limit_counts_collections_only() -> None:
    assert parse_workspace_yaml("a: {b: 1}\n", max_depth=2) == {"a": {"b": 1}}
    error = _error("a: {b: {c: 1}}\n", max_depth=2)
    assert (error.line, error.column) == (1, 8)
    assert parse_workspace_yaml("scalar\n", max_depth=0) == "scalar"


def test_depth_limit_applies_to_alias_expansion() -> None:
    text = "a: &x [[1]]\nb: [*x]\n"
    assert parse_workspace_yaml(text, max_depth=4) == {"a": [[1]], "b": [[[1]]]}
    error = _error(text, max_depth=3)
    assert (error.line, error.column) == (2, 5)


def test_node_limit_counts_expanded_aliases() -> None:
    text = "a: &x [1, 2, 3]\nb: *x\n"
    assert parse_workspace_yaml(text, max_nodes=11) == {"a": [1, 2, 3], "b": [1, 2, 3]}
    error = _error(text, max_nodes=10)
    assert (error.line, error.column) == (2, 4)
    assert "more than 10 nodes" in error.message
    assert parse_workspace_yaml("[1, 2]", max_nodes=3) == [1, 2]
    assert _error("[1, 2, 3]", max_nodes=3).column == 8


def _laughs(levels: int) -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_early(parser_events: list[int]) -> None:
    # Each line is 12 events (key, sequence start, 9 items, sequence end) after the 3 that
    # open the stream, the document and the map: refusal comes on the line that crosses a
    # limit, before the parser reads the rest, let alone a node per expansion.
    error = _error(_laughs(10))
    assert "alias count" in error.message
    assert (error.line, error.column) == (4, 10)
    assert parser_events[-1] <= 3 + 12 * 4
    error = _error(_laughs(10), max_alias_count=-1)
    assert "more than 100000 nodes" in error.message
    assert error.line is not None
    assert error.line <= 10
    assert parser_events[-1] <= 3 + 12 * error.line


def _scalar_aliases(count: int, anchored: str = "x") -> str:
    return f"a: &a {anchored}\n" + "".join(f"k{index}: *a\n" for index in range(count))


def test_alias_count_guard_matches_the_runtime() -> None:
    # yaml's maxAliasCount (100): an anchor used by as many aliases as that is refused.
    assert len(parse_workspace_yaml(_scalar_aliases(99))) == 100
    error = _error(_scalar_aliases(100))
    assert (error.line, error.column) == (101, 6)
    assert "Excessive alias count" in error.message
    assert _error(_scalar_aliases(100, "[1]")).line == 101
    # Empty collections weigh nothing; a negative limit turns the guard off.
    assert len(parse_workspace_yaml(_scalar_aliases(300, "[]"))) == 301
    assert len(parse_workspace_yaml(_scalar_aliases(300), max_alias_count=-1)) == 301
    assert len(parse_workspace_yaml(_scalar_aliases(5), max_alias_count=6)) == 6
    assert _error(_scalar_aliases(6), max_alias_count=6).line == 7


def test_alias_weight_is_taken_when_the_anchor_is_first_aliased() -> None:
    # b weighs 42 (a's use count when b is first aliased): two uses of b make 3 * 42 > 100.
    head = "a: &a x\nb: &b [*a, [y]]\n" + "".join(f"c{index}: *a\n" for index in range(40))
    assert parse_workspace_yaml(head + "d0: *b\n")["d0"] == ["x", ["y"]]
    assert _error(head + "d0: *b\nd1: *b\n").line == 44


def test_aliases_refer_to_the_latest_anchor_of_that_name() -> None:
    document = parse_workspace_yaml("a: &x 1\nb: &x [2]\nc: *x\nd: [&x 3, *x]\n")
    assert document == {"a": 1, "b": [2], "c": [2], "d": [3, 3]}


def test_moderate_alias_fan_out_is_accepted() -> None:
    document = parse_workspace_yaml(_laughs(3))
    assert len(document["l2"]) == 9
    assert document["l2"][0] == document["l1"]
    assert canonical_json(document).count("lol") == 9 + 81 + 729


# ------------------------------------------------------------------------------------------
# Canonical JSON
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (1.0, "1"),
        (-0.0, "0"),
        (-7, "-7"),
        (-1.5, "-1.5"),
        (0.1, "0.1"),
        (100.0, "100"),
        (123456.789, "123456.789"),
        (0.30000000000000004, "0.30000000000000004"),
        (1e16, "10000000000000000"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e21, "1.5e+21"),
        (6.02e23, "6.02e+23"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (0.000001, "0.000001"),
        (0.0000015, "0.0000015"),
        (1e-7, "1e-7"),
        (-1e-7, "-1e-7"),
        (1.23e-18, "1.23e-18"),
        (5e-324, "5e-324"),
        (MAX_SAFE_INTEGER + 1, "9007199254740992"),
        (123456789012345678901, "123456789012345680000"),
        (10**400, "null"),
        (-(10**400), "null"),
        (math.nan, "null"),
        (math.inf, "null"),
        (-math.inf, "null"),
    ],
)
def test_numbers_and_literals(value: Any, expected: str) -> None:
    assert canonical_json(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('say "hi"', '"say \\"hi\\""'),
        ("C:\\path", '"C:\\\\path"'),
        ("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"'),
        ("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"'),
        ("\x7f\x85\u2028\u2029", '"\x7f\x85\u2028\u2029"'),
        ("naïve 日本 \U0001f680", '"naïve 日本 \U0001f680"'),
        ("/</script>", '"/</script>"'),
        ("\ud83d\ude80", '"\U0001f680"'),
        ("\ud800", '"\\ud800"'),
        ("a\udfffb", '"a\\udfffb"'),
        ("\ude80\ud83d", '"\\ude80\\ud83d"'),
    ],
)
def test_strings_are_escaped_like_json_stringify(value: str, expected: str) -> None:
    assert canonical_json(value) == expected


def test_key_order() -> None:
    value = {
        "b": 1,
        "B": 2,
        "a": 3,
        "10": 4,
        "2": 5,
        "4294967294": 6,
        "4294967295": 7,
        "01": 8,
        "-1": 9,
        "0": 10,
        "_": 11,
        "É": 12,
        "e": 13,
        "99999999999": 14,
    }
    assert canonical_json(value) == (
        '{"0":10,"2":5,"10":4,"4294967294":6,"_":11,"-1":9,"01":8,"4294967295":7,'
        '"99999999999":14,"a":3,"b":1,"B":2,"e":13,"É":12}'
    )


def test_keys_that_collate_equal_keep_insertion_order() -> None:
    # localeCompare returns 0 for them and the runtime's sort is stable.
    assert canonical_json({"": 1, "\x1f": 2}) == '{"":1,"\\u001f":2}'
    assert canonical_json({"\x1f": 2, "": 1}) == '{"\\u001f":2,"":1}'


def test_nested_containers_and_other_sequences() -> None:
    value: dict[str, Any] = {
        "z": ({"y": 1, "x": [2, {}]}, []),
        "m": types.MappingProxyType({"k": "v"}),
    }
    assert canonical_json(value) == '{"m":{"k":"v"},"z":[{"x":[2,{}],"y":1},[]]}'


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", object(), {"a": [1, {2}]}])
def test_non_json_values_are_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        canonical_json(value)


@pytest.mark.parametrize("value", [{1: "a"}, {None: "a"}, {("a",): 1}])
def test_non_string_object_keys_are_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        canonical_json(value)


def test_keys_naming_the_same_js_property_are_refused() -> None:
    with pytest.raises(ValueError, match="same JS property"):
        canonical_json({"\U0001f680": 1, "\ud83d\ude80": 2})


def test_collator_is_per_thread() -> None:
    keys = [f"{letter}{number}" for letter in "aBcD" for number in range(50)]
    expected = canonical_json(dict.fromkeys(keys, 0))
    results: list[str] = []

    def work() -> None:
        shuffled = keys[:]
        random.Random(len(results)).shuffle(shuffled)
        results.append(canonical_json(dict.fromkeys(shuffled, 0)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 4


def test_config_hash_is_sha256_of_canonical_json() -> None:
    value = {"b": [1.0, "x"], "a": None}
    assert canonical_json(value) == '{"a":null,"b":[1,"x"]}'
    assert config_hash(value) == hashlib.sha256(b'{"a":null,"b":[1,"x"]}').hexdigest()
    assert config_hash(value) == hash_workspace_yaml("b: [1.0, x]\na: ~\n")


# ------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_safe_int = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
_json_leaves = st.none() | st.booleans() | _safe_int | _finite | _text
_json_values = st.recursive(
    _json_leaves,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_text, children, max_size=6),
    max_leaves=30,
)
# Keys that collate equal (e.g. differing only by ignorable control characters) keep their
# insertion order, as Array.prototype.sort is stable; permutation invariance needs distinct ones.
_COLLATOR = icu.Collator.createInstance(icu.Locale("en-US"))


_short_keys = st.text(max_size=8)


def _collation_distinct(
    children: st.SearchStrategy[Any], keys: st.SearchStrategy[str] = _short_keys
) -> st.SearchStrategy[dict[str, Any]]:
    pairs = st.lists(
        st.tuples(keys, children),
        max_size=6,
        unique_by=lambda pair: bytes(_COLLATOR.getSortKey(pair[0])),
    )
    return pairs.map(dict)


_any_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=5) | _collation_distinct(children),
    max_leaves=30,
)
# ruamel's emitter still writes NEL, LS and PS as YAML 1.1 line breaks inside quoted scalars,
# which a YAML 1.2 reader (the runtime's, and this module's) keeps as characters.
_yaml_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x85\u2028\u2029"),
    max_size=12,
)
_yaml_values = st.recursive(
    st.none() | st.booleans() | _safe_int | _finite | _yaml_text,
    lambda children: st.lists(children, max_size=5) | _collation_distinct(children, _yaml_text),
    max_leaves=30,
)


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: _shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [_shuffled(item, rng) for item in value]
    return value


@given(_any_values, st.randoms(use_true_random=False))
def test_key_insertion_order_does_not_matter(value: Any, rng: random.Random) -> None:
    assert canonical_json(_shuffled(value, rng)) == canonical_json(value)
    assert config_hash(_shuffled(value, rng)) == config_hash(value)


def _as_doubles(value: Any) -> Any:
    """The value with every number as the double JS holds (JSON integers may exceed 2**53)."""
    if isinstance(value, dict):
        return {key: _as_doubles(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_doubles(item) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


@given(_json_values)
def test_canonical_json_round_trips_through_json(value: Any) -> None:
    assert _as_doubles(json.loads(canonical_json(value))) == _as_doubles(value)


@given(_any_values)
def test_hash_is_lowercase_hex_sha256(value: Any) -> None:
    digest = config_hash(value)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


@given(_yaml_values)
def test_yaml_dump_and_parse_preserves_the_canonical_form(value: Any) -> None:
    dumper = YAML(typ="safe", pure=True)
    dumper.default_flow_style = False
    dumper.width = 4096  # ruamel can fold a long plain key over two lines, which is invalid
    stream = io.StringIO()
    dumper.dump(value, stream)
    assert canonical_json(parse_workspace_yaml(stream.getvalue())) == canonical_json(value)


@given(_text)
def test_string_escaping_matches_json_dumps(value: str) -> None:
    assert canonical_json(value) == json.dumps(value, ensure_ascii=False)


@given(_finite)
def test_number_format_round_trips_and_uses_js_exponent_thresholds(value: float) -> None:
    text = canonical_json(value)
    assert float(text) == value
    exponential = value != 0 and (abs(value) >= 1e21 or abs(value) < 1e-6)
    assert ("e" in text) == exponential
    assert not text.endswith(".0")
    assert "e+0" not in text
    assert "e-0" not in text
