"""Runtime versions: semantic-version parsing and the compatibility rule (SPEC 3.2).

Versions are also stored as a byte-wise sortable key so that the database can compute
compatibility in a GROUP BY without loading every runtime.
"""

from __future__ import annotations

from enum import StrEnum

import semver

from fleetplane.domain.errors import Invalid

# Separates prerelease identifiers in a sort key; it sorts below every character an identifier
# may hold ([0-9A-Za-z-]) so that a shorter identifier list sorts first, as semver requires.
_IDENTIFIER_SEPARATOR = " "
# Marks "no prerelease"; it sorts above "-", so a release sorts after its prereleases.
_RELEASE_MARK = "~"
_WIDTH = 10


class Compatibility(StrEnum):
    """How fully a runtime version can take part in config sync."""

    FULL = "full"
    LIMITED = "limited"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"


def parse_version(text: str) -> semver.Version:
    """Parse a semantic version, a leading `v` allowed; anything else is Invalid."""
    candidate = text[1:] if text.startswith(("v", "V")) else text
    try:
        return semver.Version.parse(candidate)
    except (ValueError, TypeError) as exc:
        raise Invalid(
            f"{text!r} is not a semantic version (expected MAJOR.MINOR.PATCH)",
            code="invalid_version",
            details={"version": text},
        ) from exc


def normalise_reported_version(text: str | None) -> str | None:
    """A reported version, or None when the runtime reported none (`"unknown"` means none)."""
    if text is None or text == "unknown":
        return None
    return str(parse_version(text))


def version_sort_key(version: str) -> str:
    """A string whose byte order equals semantic-version precedence (build metadata ignored)."""
    parsed = parse_version(version)
    core = ".".join(f"{part:0{_WIDTH}d}" for part in (parsed.major, parsed.minor, parsed.patch))
    if parsed.prerelease is None:
        return core + _RELEASE_MARK
    identifiers = []
    for identifier in parsed.prerelease.split("."):
        if identifier.isdigit():
            # Numeric identifiers sort numerically and below alphanumeric ones.
            identifiers.append("0" + identifier.zfill(_WIDTH * 2))
        else:
            identifiers.append("1" + identifier)
    return core + "-" + _IDENTIFIER_SEPARATOR.join(identifiers)


def compatibility(version: str | None, *, minimum: str, full_sync: str) -> Compatibility:
    """The compatibility of a reported version against the minimum and full-sync versions."""
    if version is None:
        return Compatibility.UNKNOWN
    parsed = parse_version(version)
    if parsed >= parse_version(full_sync):
        return Compatibility.FULL
    if parsed >= parse_version(minimum):
        return Compatibility.LIMITED
    return Compatibility.UNSUPPORTED
