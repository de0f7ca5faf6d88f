"""HTML rendering for the dashboard: the Jinja2 environment, its filters and response headers."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from ruamel.yaml import YAML

from fleetplane.domain.config_hash import config_hash, parse_workspace_yaml
from fleetplane.domain.errors import InvalidDocument

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
REFRESH_SECONDS = 15

# Pages can show a secret exactly once; no cache may keep a copy. (The app's SecurityHeaders
# middleware adds the CSP and framing headers; the pages need no inline script or style.)
PAGE_HEADERS = {"Cache-Control": "no-store"}


def _span(seconds: float) -> str:
    """`4 min ago` for a non-negative age in seconds, `in 4 min` for a negative one."""
    past = seconds >= 0
    seconds = abs(seconds)
    if seconds < 5:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            amount = math.floor(seconds / size)
            return f"{amount} {unit} ago" if past else f"in {amount} {unit}"
    return "just now"  # pragma: no cover - the loop always returns for seconds >= 5


def relative_time(value: datetime | None, now: datetime) -> str:
    """The age of a moment on the server clock, in one unit: `4 min ago`, `in 2 d`."""
    if value is None:
        return "never"
    return _span((now - value).total_seconds())


def age(seconds: float | None) -> str:
    """`4 min ago` for an age in seconds, as the fleet service reports heartbeat ages."""
    if seconds is None:
        return "never"
    return _span(seconds)


def duration(seconds: float | None) -> str:
    """A length of time in its largest whole unit: `12 min`, `2 h`, `45 s`."""
    if seconds is None:
        return "—"
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{math.floor(seconds / size)} {unit}"
    return f"{math.floor(seconds)} s"


def ago_iso(value: str | None, now: datetime) -> str:
    """The age of an ISO 8601 string from the services, as `relative_time` shows moments."""
    if not value:
        return "never"
    return relative_time(datetime.fromisoformat(value.replace("Z", "+00:00")), now)


def share(part: int | None, whole: int | None) -> float | None:
    """part / whole, or None for an empty whole."""
    if not whole:
        return None
    return (part or 0) / whole


def exact_iso(value: str | None) -> str:
    """An ISO 8601 string from the services shown as `exact_time` shows moments."""
    if not value:
        return ""
    return exact_time(datetime.fromisoformat(value))


def exact_time(value: datetime | None) -> str:
    """The moment in UTC to the second, for `title` attributes."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(value: datetime | None) -> str:
    """ISO 8601 in UTC, for `<time datetime>`."""
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def datetime_local(value: datetime) -> str:
    """The value an `<input type=datetime-local>` shows, in UTC."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def percent(share: float | None) -> str:
    """A share as a whole percentage, rounded down so that 99.7 % never reads as 100 %."""
    if share is None:
        return "—"
    return f"{math.floor(share * 100 + 1e-9)}%"


def bar_width(share: float | None) -> str:
    """The width of the aligned bar, in percent of its track."""
    return f"{(share or 0) * 100:.1f}"


def short_hash(value: str | None) -> str:
    """The first 8 hex digits of a hash, as people quote it."""
    return value[:8] if value else "—"


def thousands(value: int) -> str:
    """1234 → 1,234."""
    return f"{value:,}"


def label(value: str | None) -> str:
    """A state value as text: `needs_reconcile` → `needs reconcile`."""
    return (value or "").replace("_", " ")


def editable_yaml(document: Any) -> str:
    """The config document as YAML text that parses back to the same hash (JSON if it cannot)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.allow_unicode = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    text = buffer.getvalue()
    try:
        if config_hash(parse_workspace_yaml(text)) == config_hash(document):
            return text
    except InvalidDocument:
        pass
    # JSON is YAML too, and keeps every value exactly.
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def error_excerpt(text: str, line: int | None, column: int | None) -> dict[str, Any] | None:
    """The line of the editor text an error points at, with a caret under its column."""
    lines = text.splitlines()
    if line is None or not 1 <= line <= len(lines):
        return None
    col = max(1, column or 1)
    return {"line": line, "text": lines[line - 1], "caret": " " * (col - 1) + "^"}


environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)
environment.filters.update(
    ago=relative_time,
    age=age,
    exact_iso=exact_iso,
    ago_iso=ago_iso,
    duration=duration,
    exact=exact_time,
    iso=iso_time,
    percent=percent,
    bar_width=bar_width,
    short_hash=short_hash,
    thousands=thousands,
    label=label,
    datetime_local=datetime_local,
)
environment.globals["refresh_seconds"] = REFRESH_SECONDS
environment.globals["share"] = share


def page(
    template: str, *, status: int = 200, headers: dict[str, str] | None = None, **values: Any
) -> HTMLResponse:
    """A rendered template that no cache keeps."""
    body = environment.get_template(template).render(**values)
    return HTMLResponse(body, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})
