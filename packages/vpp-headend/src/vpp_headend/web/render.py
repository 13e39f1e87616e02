"""HTML rendering: one Jinja2 environment over the templates shipped in this package.

Autoescaping is on for every template (ids and details come from gateways and
operators); the filters format numbers and times the same way on every page.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from litestar import Response
from litestar.enums import MediaType

from ..domain.telemetry import status_name


def kw(value: float | None, digits: int = 1) -> str:
    """A power in kW for a table cell ("—" when unknown)."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def pct(value: float | None) -> str:
    """A percentage (state of charge) for a table cell."""
    return "—" if value is None else f"{value:.0f}"


def when(value: datetime | None) -> str:
    """An instant as ISO 8601 in UTC to the second ("—" when unknown)."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso(value: datetime | None) -> str:
    """An instant for a ``datetime`` attribute (full precision)."""
    return "" if value is None else value.astimezone(UTC).isoformat()


def seconds(value: float | None) -> str:
    """A duration in seconds for a table cell."""
    if value is None:
        return "—"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


@cache
def environment() -> Environment:
    """The console's templates (built once per process)."""
    env = Environment(
        loader=PackageLoader("vpp_headend.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(kw=kw, pct=pct, when=when, iso=iso, seconds=seconds, status=status_name)
    return env


def page(template: str, status_code: int = 200, **context: Any) -> Response[str]:
    """A rendered page as an HTML response."""
    html = environment().get_template(template).render(**context)
    return Response(html, media_type=MediaType.HTML, status_code=status_code)


__all__ = ["environment", "iso", "kw", "page", "pct", "seconds", "when"]
