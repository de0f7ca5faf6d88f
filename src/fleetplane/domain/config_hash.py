"""Workspace config hash, computed exactly as a LumenFlow runtime computes its own (SPEC 3.3).

The runtime parses ``workspace.yaml`` with the JavaScript ``yaml`` package (YAML 1.2 core
schema, ``YAML.parse`` defaults), turns it into a plain JS value, sorts object keys recursively
with ``localeCompare`` under en-US, serialises with ``JSON.stringify`` and hashes the UTF-8 bytes
with SHA-256. This module reproduces each step in Python:

* :func:`parse_workspace_yaml` walks ruamel.yaml's event stream and resolves scalars itself, so
  the core-schema rules, the no-merge ``<<`` key, duplicate-key errors, the JS conversion of
  non-string keys and the alias-count guard are the runtime's, not ruamel's own loader's; it
  also bounds nesting depth and alias expansion. Documents whose runtime value has no JSON form
  it can reproduce (collection keys, ``!!binary``/``!!timestamp``/``!!set``/``!!omap``/
  ``!!pairs``, a ``%YAML`` version other than 1.2) are refused rather than guessed at;
* :func:`canonical_json` orders keys by ICU collation and then as a JS object would (array-index
  keys first), and formats numbers and strings as ``JSON.stringify`` does;
* :func:`config_hash` and :func:`hash_workspace_yaml` hash the result.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import icu
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    DocumentStartEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceStartEvent,
)
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scanner import Scanner

from fleetplane.domain.errors import InvalidDocument

__all__ = [
    "DEFAULT_MAX_ALIAS_COUNT",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_NODES",
    "DEFAULT_MAX_TEXT_CHARS",
    "canonical_json",
    "config_hash",
    "hash_workspace_yaml",
    "parse_workspace_yaml",
]

DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_NODES = 100_000
DEFAULT_MAX_ALIAS_COUNT = 100  # the runtime's yaml `maxAliasCount` default; negative disables
# Characters of scalar text once aliases are expanded. The alias-count guard bounds how many
# aliases there are, not how much each one copies: 99 aliases of a 500 KB string would make a
# 50 MB document out of a 500 KB body. Without aliases the text never exceeds the body.
DEFAULT_MAX_TEXT_CHARS = 2 * 1024 * 1024

# --------------------------------------------------------------------------------------------
# YAML 1.2 core schema, as the JS `yaml` package resolves it
# --------------------------------------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
_NO_MATCH: Any = object()

_NULL_WORDS = frozenset({"", "~", "null", "Null", "NULL"})
_BOOL_WORDS = {
    "true": True,
    "True": True,
    "TRUE": True,
    "false": False,
    "False": False,
    "FALSE": False,
}
_INT_OCT = re.compile(r"0o[0-7]+")
_INT_DEC = re.compile(r"[-+]?[0-9]+")
_INT_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT_WORDS = {
    **{f"{sign}.{word}": math.inf for sign in ("", "+") for word in ("inf", "Inf", "INF")},
    **{f"-.{word}": -math.inf for word in ("inf", "Inf", "INF")},
    **{f".{word}": math.nan for word in ("nan", "NaN", "NAN")},
}
_FLOAT_EXP = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+")
_FLOAT_DEC = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)")
# A decimal integer with more significant digits than this is beyond any double: JS gives
# +-Infinity. (The bound also keeps Python's int() clear of its 4300-digit conversion limit.)
_MAX_INT_DIGITS = 400


def _match_null(text: str) -> Any:
    return None if text in _NULL_WORDS else _NO_MATCH


def _match_bool(text: str) -> Any:
    return _BOOL_WORDS.get(text, _NO_MATCH)


def _match_int(text: str) -> Any:
    if _INT_OCT.fullmatch(text):
        return int(text[2:], 8)
    if _INT_HEX.fullmatch(text):
        return int(text[2:], 16)
    if _INT_DEC.fullmatch(text):
        if len(text.lstrip("+-").lstrip("0")) > _MAX_INT_DIGITS:
            return -math.inf if text.startswith("-") else math.inf
        return int(text, 10)
    return _NO_MATCH


def _match_float(text: str) -> Any:
    if text in _FLOAT_WORDS:
        return _FLOAT_WORDS[text]
    if _FLOAT_EXP.fullmatch(text) or _FLOAT_DEC.fullmatch(text):
        return float(text)
    return _NO_MATCH


# Untagged plain scalars try these in order; a quoted or block scalar is always a string.
_IMPLICIT_MATCHERS: tuple[Callable[[str], Any], ...] = (
    _match_null,
    _match_bool,
    _match_int,
    _match_float,
)
# An explicit core tag resolves only if the text fits that type; otherwise the runtime warns
# "Unresolved tag" and keeps the text as a string. Every other tag (`!`, `!!str`, `!local`,
# `!!map` on a scalar, ...) also yields the string.
_TAGGED_MATCHERS: dict[str, Callable[[str], Any]] = {
    _TAG + "null": _match_null,
    _TAG + "bool": _match_bool,
    _TAG + "int": _match_int,
    _TAG + "float": _match_float,
}
# YAML 1.1 types the runtime still knows by name; their JS values (Buffer, Date, Set, Map)
# have no JSON form this module can reproduce, so such documents are refused.
_UNSUPPORTED_SCALAR_TAGS = frozenset({_TAG + "binary", _TAG + "timestamp"})
_UNSUPPORTED_COLLECTION_TAGS = frozenset(
    {(_TAG + "set", "map"), (_TAG + "omap", "seq"), (_TAG + "pairs", "seq")}
)

_SURROGATE = re.compile("[\ud800-\udfff]")


def _join_surrogates(text: str) -> str:
    """Merge UTF-16 surrogate pairs (e.g. from "\\ud83d\\ude80" escapes) as JS strings do."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


# YAML 1.2 has only CR and LF as line breaks; ruamel's scanner still treats the YAML 1.1 breaks
# NEL, LS and PS as breaks (folding them in scalars, ending comments). Before scanning, each raw
# one is swapped for a private-use character the document cannot otherwise produce, which the
# scanner treats as the ordinary character YAML 1.2 says it is, and swapped back in scalars.
_YAML11_BREAKS = "\x85\u2028\u2029"
_PRIVATE_USE = range(0xE000, 0xF900)
_HEX_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})")


def _shield_breaks(text: str) -> tuple[str, dict[int, str]]:
    """Hide raw NEL/LS/PS from ruamel; return the shielded text and the table to restore them."""
    present = [char for char in _YAML11_BREAKS if char in text]
    if not present:
        return text, {}
    taken = {ord(char) for char in text}
    taken.update(int(short or long, 16) for short, long in _HEX_ESCAPE.findall(text))
    free = (point for point in _PRIVATE_USE if point not in taken)
    restore: dict[int, str] = {}
    for char in present:
        point = next(free, None)
        if point is None:
            raise InvalidDocument("Too many distinct private-use characters to parse safely")
        restore[point] = char
    shield = {ord(char): chr(point) for point, char in restore.items()}
    return text.translate(shield), restore


# Inside flow collections ruamel (like PyYAML) reads '?' as the explicit-key indicator even in
# `{?x: 1}`, takes ':' as the value indicator in `{:x}`, misses it in `["a":1]`, and lets '-' or
# ':' start a plain scalar before a flow indicator (`[-]`). YAML 1.2 (and the runtime) make "-",
# "?" and ":" start a plain scalar exactly when the next character may continue one, and also
# read ':' as the value indicator right after a JSON-like key (a quoted scalar or a collection).
_FLOW_SEPARATORS = "\0 \t\r\n,[]{}"


class _Yaml12Scanner(Scanner):
    """ruamel's scanner with YAML 1.2's reading of '-', '?' and ':' inside flow collections."""

    def check_key(self) -> Any:
        if self.flow_level:
            return self.reader.peek(1) in _FLOW_SEPARATORS
        return super().check_key()

    def check_value(self) -> Any:
        if not self.flow_level:
            return super().check_value()
        if self.reader.peek(1) in _FLOW_SEPARATORS:
            return True
        # An adjacent value (`"a":1`) follows a JSON-like key; the scanner reads text strings,
        # whose whole buffer stays available, and a flow collection has opened before here.
        buffer, index = self.reader.buffer, self.reader.pointer - 1
        while buffer[index] in " \t":
            index -= 1
        return buffer[index] in "\"']}"

    def check_plain(self) -> Any:
        if self.flow_level and self.reader.peek() in "-?:":
            return self.reader.peek(1) not in _FLOW_SEPARATORS
        return super().check_plain()


def _invalid(message: str, mark: Any) -> InvalidDocument:
    line = mark.line + 1
    column = mark.column + 1
    return InvalidDocument(f"{message} at line {line}, column {column}", line=line, column=column)


def _resolve_scalar(event: Any, restore: dict[int, str]) -> Any:
    text = _join_surrogates(event.value.translate(restore) if restore else event.value)
    if event.style is None and text.endswith(":"):
        # Only ruamel's flow-context scanner yields these (`[a:]` is `[{a: null}]` in YAML 1.2);
        # refuse rather than hash a value the runtime would read differently.
        raise _invalid("Plain scalar ending in ':' is ambiguous", event.start_mark)
    tag: str | None = event.tag
    if tag is None:
        if event.style is None:
            for matcher in _IMPLICIT_MATCHERS:
                value = matcher(text)
                if value is not _NO_MATCH:
                    return value
        return text
    if tag in _UNSUPPORTED_SCALAR_TAGS:
        raise _invalid(f"Unsupported tag {tag}", event.start_mark)
    tagged = _TAGGED_MATCHERS.get(tag)
    if tagged is not None:
        value = tagged(text)
        if value is not _NO_MATCH:
            return value
    return text


# --------------------------------------------------------------------------------------------
# Event stream -> plain Python value
# --------------------------------------------------------------------------------------------

_NO_KEY: Any = object()


@dataclass(eq=False, slots=True)
class _Node:
    """A finished node: its value, expanded node count, collection height and alias facts."""

    value: Any
    size: int
    height: int
    is_scalar: bool
    alias_of: _Anchor | None = None
    # Characters of scalar text in the node once expanded (the text-size guard).
    chars: int = 0
    # For the runtime's alias-count guard: whether a scalar is reachable without crossing an
    # alias, and the anchors of the aliases reachable that way.
    has_leaf: bool = False
    refs: set[_Anchor] = field(default_factory=set)


@dataclass(eq=False, slots=True)
class _Anchor:
    """An anchored node and the runtime's bookkeeping for it (yaml's ``maxAliasCount``)."""

    node: _Node | None
    count: int = 1
    alias_count: int = 0


@dataclass(slots=True)
class _Frame:
    """A collection whose end event has not been seen yet."""

    container: Any
    anchor: _Anchor | None
    mark: Any
    size: int = 1
    height: int = 0
    key: Any = _NO_KEY
    chars: int = 0
    seen: set[tuple[str, Any]] = field(default_factory=set)
    has_leaf: bool = False
    refs: set[_Anchor] = field(default_factory=set)


def _to_double(number: int | float) -> float:
    """The JS Number an integer becomes (parseInt rounds to the nearest double)."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def _key_identity(value: Any) -> tuple[str, Any] | None:
    """What the runtime's duplicate-key check compares (JS ===); None never equals anything."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        number = _to_double(value)
        return None if math.isnan(number) else ("number", number)
    return ("string", value)


def _key_string(value: Any) -> str:
    """The property name the runtime gives a scalar key (null becomes '', else String(key))."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _js_number_to_string(_to_double(value))
    return str(value)


def _clone(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clone(item) for item in value]
    return value


class _Builder:
    """Builds the document value from parser events, enforcing the runtime's rules and limits."""

    def __init__(self, limits: tuple[int, int, int, int], restore: dict[int, str]) -> None:
        self.max_depth, self.max_nodes, self.max_alias_count, self.max_text_chars = limits
        self.restore = restore
        self.nodes = 0
        self.text_chars = 0
        self.documents = 0
        self.stack: list[_Frame] = []
        self.anchors: dict[str, _Anchor] = {}
        self.result: Any = None

    def feed(self, event: Any) -> None:
        if isinstance(event, ScalarEvent):
            self._count(1, event)
            self._count_text(len(event.value), event)
            value = _resolve_scalar(event, self.restore)
            node = _Node(value, size=1, height=0, is_scalar=True, has_leaf=True)
            node.chars = len(event.value)
            self._finish(node, self._anchor(event), event.start_mark)
        elif isinstance(event, AliasEvent):
            self._alias(event)
        elif isinstance(event, MappingStartEvent | SequenceStartEvent):
            self._start(event)
        elif isinstance(event, CollectionEndEvent):
            frame = self.stack.pop()
            node = _Node(frame.container, frame.size, frame.height + 1, is_scalar=False)
            node.has_leaf, node.refs, node.chars = frame.has_leaf, frame.refs, frame.chars
            self._finish(node, frame.anchor, frame.mark)
        elif isinstance(event, DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                message = "Source contains multiple documents"
                raise _invalid(message, event.start_mark)
            if event.version is not None and tuple(event.version) != (1, 2):
                version = ".".join(str(part) for part in event.version)
                raise _invalid(f"Unsupported YAML version {version}", event.start_mark)

    def _anchor(self, event: Any) -> _Anchor | None:
        if event.anchor is None:
            return None
        anchor = _Anchor(None)
        self.anchors[event.anchor] = anchor
        return anchor

    def _count(self, nodes: int, event: Any) -> None:
        self.nodes += nodes
        if self.nodes > self.max_nodes:
            message = f"Document expands to more than {self.max_nodes} nodes"
            raise _invalid(message, event.start_mark)

    def _count_text(self, chars: int, event: Any) -> None:
        self.text_chars += chars
        if self.text_chars > self.max_text_chars:
            message = f"Document expands to more than {self.max_text_chars} characters of text"
            raise _invalid(message, event.start_mark)

    def _check_depth(self, depth: int, event: Any) -> None:
        if depth > self.max_depth:
            message = f"Document nests deeper than {self.max_depth} levels"
            raise _invalid(message, event.start_mark)

    def _start(self, event: Any) -> None:
        kind = "map" if isinstance(event, MappingStartEvent) else "seq"
        if (event.tag, kind) in _UNSUPPORTED_COLLECTION_TAGS:
            raise _invalid(f"Unsupported tag {event.tag}", event.start_mark)
        self._check_depth(len(self.stack) + 1, event)
        self._count(1, event)
        container: Any = {} if kind == "map" else []
        self.stack.append(_Frame(container, self._anchor(event), event.start_mark))

    def _alias(self, event: Any) -> None:
        anchor = self.anchors.get(event.anchor)
        if anchor is None:
            raise _invalid(f"Unresolved alias *{event.anchor}", event.start_mark)
        target = anchor.node
        if target is None:
            raise _invalid(f"Recursive alias *{event.anchor}", event.start_mark)
        self._check_alias_count(anchor, target, event)
        self._check_depth(len(self.stack) + target.height, event)
        self._count(target.size, event)
        self._count_text(target.chars, event)
        value = _clone(target.value)
        node = _Node(value, target.size, target.height, target.is_scalar, alias_of=anchor)
        node.chars = target.chars
        self._finish(node, None, event.start_mark)

    def _check_alias_count(self, anchor: _Anchor, target: _Node, event: Any) -> None:
        """Mirror yaml's maxAliasCount guard, which the runtime applies with its default 100."""
        anchor.count += 1
        if anchor.alias_count == 0:
            weights = [other.count * other.alias_count for other in target.refs]
            anchor.alias_count = max([int(target.has_leaf), *weights])
        if 0 <= self.max_alias_count < anchor.count * anchor.alias_count:
            message = "Excessive alias count indicates a resource exhaustion attack"
            raise _invalid(message, event.start_mark)

    def _finish(self, node: _Node, anchor: _Anchor | None, mark: Any) -> None:
        if anchor is not None:
            anchor.node = node
        if not self.stack:
            self.result = node.value
            return
        parent = self.stack[-1]
        parent.size += node.size
        parent.chars += node.chars
        parent.height = max(parent.height, node.height)
        if node.alias_of is not None:
            parent.refs.add(node.alias_of)
        else:
            parent.has_leaf = parent.has_leaf or node.has_leaf
            parent.refs |= node.refs
        if isinstance(parent.container, list):
            parent.container.append(node.value)
        elif parent.key is _NO_KEY:
            parent.key = self._map_key(parent, node, mark)
        else:
            parent.container[parent.key] = node.value
            parent.key = _NO_KEY

    @staticmethod
    def _map_key(parent: _Frame, node: _Node, mark: Any) -> str:
        if not node.is_scalar:
            raise _invalid("Collection values as mapping keys are not supported", mark)
        # The runtime compares keys only between scalar nodes, so keys given by alias are
        # never reported as duplicates (a later one simply overwrites the property).
        identity = None if node.alias_of is not None else _key_identity(node.value)
        if identity is not None:
            if identity in parent.seen:
                raise _invalid("Map keys must be unique", mark)
            parent.seen.add(identity)
        return _key_string(node.value)


def _document_error(error: YAMLError, text: str) -> InvalidDocument:
    """Translate a ruamel.yaml error into InvalidDocument with a 1-based line and column."""
    if isinstance(error, ReaderError):
        position = int(error.position)
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        message = f"Unacceptable character #x{int(error.character):04x}: {error.reason}"
        return InvalidDocument(
            f"{message} at line {line}, column {column}", line=line, column=column
        )
    if isinstance(error, MarkedYAMLError):
        problem = str(error.problem or error.context or "invalid YAML")
        message = problem[:1].upper() + problem[1:]
        mark = error.problem_mark or error.context_mark
        if mark is not None:
            return _invalid(message, mark)
        return InvalidDocument(message)
    return InvalidDocument(str(error) or "Invalid YAML")


def parse_workspace_yaml(
    text: str,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_alias_count: int = DEFAULT_MAX_ALIAS_COUNT,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> Any:
    """Parse one YAML 1.2 (core schema) document into plain dict/list/str/int/float/bool/None."""
    shielded, restore = _shield_breaks(text)
    builder = _Builder((max_depth, max_nodes, max_alias_count, max_text_chars), restore)
    yaml = YAML(typ="safe", pure=True)
    yaml.Scanner = _Yaml12Scanner
    events = yaml.parse(shielded)
    try:
        for event in events:
            builder.feed(event)
    except YAMLError as error:
        raise _document_error(error, text) from error
    finally:
        events.close()
    return builder.result


# --------------------------------------------------------------------------------------------
# Canonical JSON
# --------------------------------------------------------------------------------------------

_local = threading.local()


def _collator() -> Any:
    """The en-US ICU collator of this thread (ICU collators must not be shared across threads)."""
    collator = getattr(_local, "collator", None)
    if collator is None:
        collator = icu.Collator.createInstance(icu.Locale("en-US"))
        _local.collator = collator
    return collator


def _collation_key(text: str) -> bytes:
    key: bytes = _collator().getSortKey(text)
    return key


_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]{0,9}")
_MAX_ARRAY_INDEX = 2**32 - 2


def _array_index(key: str) -> int | None:
    """The numeric value of an array-index-like property name, which JS objects list first."""
    if _ARRAY_INDEX.fullmatch(key) is None:
        return None
    index = int(key)
    return index if index <= _MAX_ARRAY_INDEX else None


def _ordered_keys(keys: list[str]) -> list[str]:
    indexed: list[tuple[int, str]] = []
    named: list[str] = []
    for key in keys:
        index = _array_index(key)
        if index is None:
            named.append(key)
        else:
            indexed.append((index, key))
    indexed.sort()
    named.sort(key=_collation_key)
    return [key for _, key in indexed] + named


def _shortest_digits(number: float) -> tuple[str, int]:
    """Shortest round-trip digits of a positive finite double and its decimal exponent n.

    The value equals 0.DIGITS x 10**n, i.e. ECMAScript's s x 10**(n - k) with k = len(DIGITS).
    """
    mantissa, _, exponent = repr(number).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)
    significant = digits.lstrip("0")
    point -= len(digits) - len(significant)
    return significant.rstrip("0"), point


def _js_number_to_string(number: float) -> str:
    """ECMAScript Number::toString(x) for radix 10."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    if number < 0:
        return "-" + _js_number_to_string(-number)
    digits, n = _shortest_digits(number)
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    exponent = n - 1
    sign = "+" if exponent >= 0 else "-"
    mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{mantissa}e{sign}{abs(exponent)}"


_JSON_ESCAPE = re.compile(r'[\ud800-\udbff][\udc00-\udfff]|["\\\x00-\x1f\ud800-\udfff]')
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _escape_match(match: re.Match[str]) -> str:
    text = match.group()
    if len(text) == 2:
        return _join_surrogates(text)
    return _SHORT_ESCAPES.get(text) or f"\\u{ord(text):04x}"


def _json_string(text: str) -> str:
    return '"' + _JSON_ESCAPE.sub(_escape_match, text) + '"'


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, int | float):
        number = _to_double(value)
        out.append(_js_number_to_string(number) if math.isfinite(number) else "null")
    elif isinstance(value, str):
        out.append(_json_string(value))
    elif isinstance(value, Mapping):
        _write_object(value, out)
    elif isinstance(value, list | tuple):
        out.append("[")
        for position, item in enumerate(value):
            if position:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")


def _write_object(value: Mapping[Any, Any], out: list[str]) -> None:
    items: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"object keys must be strings, not {type(key).__name__}")
        name = _join_surrogates(key)
        if name in items:
            raise ValueError(f"two keys denote the same JS property {name!r}")
        items[name] = item
    out.append("{")
    for position, name in enumerate(_ordered_keys(list(items))):
        if position:
            out.append(",")
        out.append(_json_string(name))
        out.append(":")
        _write(items[name], out)
    out.append("}")


def canonical_json(value: Any) -> str:
    """Compact JSON with keys in the runtime's order and JavaScript number/string formatting."""
    out: list[str] = []
    _write(value, out)
    return "".join(out)


def config_hash(value: Any) -> str:
    """SHA-256 (lowercase hex) of the canonical JSON of a config document."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def hash_workspace_yaml(text: str) -> str:
    """Config hash of a workspace.yaml text."""
    return config_hash(parse_workspace_yaml(text))
