"""The runtime's ``workspace.yaml``: its config hash, and writing a pulled config to it.

The hash is :mod:`fleetplane.domain.config_hash`, the same function (and reference vectors) the
server uses, so a file equal to the desired document reports exactly the desired hash.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.representer import SafeRepresenter

from fleetplane.domain.config_hash import config_hash, hash_workspace_yaml, parse_workspace_yaml
from fleetplane.domain.errors import FleetplaneError

__all__ = [
    "dump_workspace_yaml",
    "read_workspace_file",
    "workspace_config_hash",
    "write_workspace_file",
]

# Plain scalars that the YAML 1.2 core schema (as the runtime resolves it) reads as something
# other than a string. ruamel's own resolver differs in corners (e.g. `.5e3`), so a string
# that looks like any of these is always written double-quoted.
_NON_STRING_PLAIN = re.compile(
    r"""
    ~ | null | Null | NULL
    | true | True | TRUE | false | False | FALSE
    | 0o[0-7]+ | [-+]?[0-9]+ | 0x[0-9a-fA-F]+
    | [-+]?\.(?:inf|Inf|INF) | \.(?:nan|NaN|NAN)
    | [-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+
    | [-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)
    """,
    re.VERBOSE,
)


# Characters a YAML writer may put raw into a plain or single-quoted scalar but that readers
# disagree on (C0/C1 controls, DEL, the YAML 1.1 breaks NEL/LS/PS, BOM, surrogates): strings
# holding one are double-quoted, where they are written as escapes.
_NEEDS_ESCAPES = re.compile(
    r"[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)


class _WorkspaceRepresenter(SafeRepresenter):
    """A representer of its own, so the string rule below never leaks into ruamel globally."""


def _represent_str(representer: SafeRepresenter, value: str) -> Any:
    quoted = value == "" or _NON_STRING_PLAIN.fullmatch(value) or _NEEDS_ESCAPES.search(value)
    style = '"' if quoted else None
    return representer.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_WorkspaceRepresenter.add_representer(str, _represent_str)


def _yaml_text(document: Any) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.Representer = _WorkspaceRepresenter
    yaml.default_flow_style = False
    # Keep the document's key order: keys that collate equal (NFC/NFD spellings, ignorable
    # characters) keep their document order in the canonical JSON, as the runtime's stable
    # sort keeps them, so sorting here could change the hash.
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.allow_unicode = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    return buffer.getvalue()


def _renderings(document: Any) -> list[str]:
    renderings = []
    # A value ruamel cannot represent leaves only the JSON form.
    with contextlib.suppress(YAMLError):
        renderings.append(_yaml_text(document))
    # JSON is YAML 1.2 too: every string double-quoted, so nothing is left to resolution.
    renderings.append(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    return renderings


def _reproduces(text: str, expected_hash: str) -> bool:
    try:
        return hash_workspace_yaml(text) == expected_hash
    except FleetplaneError:
        return False


def dump_workspace_yaml(document: Any) -> str:
    """YAML text whose config hash equals the document's; the JSON form when YAML cannot."""
    expected = config_hash(document)
    for text in _renderings(document):
        if _reproduces(text, expected):
            return text
    raise ValueError("the document has no YAML form that reproduces its config hash")


def _looks_like_path(source: str) -> bool:
    return "\n" not in source and Path(source).is_file()


def workspace_config_hash(source: str | os.PathLike[str]) -> str:
    """Config hash of a workspace.yaml, given its path or its text.

    A ``Path`` (or any path-like) is always read as a file; a ``str`` is read as a file when it
    is one line naming an existing file, else hashed as YAML text.
    """
    if isinstance(source, os.PathLike):
        return hash_workspace_yaml(Path(source).read_text(encoding="utf-8"))
    if _looks_like_path(source):
        return hash_workspace_yaml(Path(source).read_text(encoding="utf-8"))
    return hash_workspace_yaml(source)


def read_workspace_file(path: str | os.PathLike[str]) -> Any:
    """The parsed workspace.yaml, or None when the file does not exist."""
    file = Path(path)
    if not file.exists():
        return None
    return parse_workspace_yaml(file.read_text(encoding="utf-8"))


def write_workspace_file(path: str | os.PathLike[str], document: Any) -> str:
    """Atomically replace the file with the document as YAML; return the written file's hash."""
    text = dump_workspace_yaml(document)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a runtime never reads a half-written file.
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
        Path(temporary).replace(target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return hash_workspace_yaml(text)
