"""The API's routes, read from the URL resolver, so sweeps cover every route that exists."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

PUBLIC = {"schema", "docs"}  # documentation is public on purpose


@dataclass(frozen=True)
class Route:
    name: str
    regex: str
    callback: Any

    @property
    def params(self) -> set[str]:
        import re

        return set(re.compile(self.regex).groupindex)

    @property
    def methods(self) -> list[str]:
        actions = getattr(self.callback, "actions", None)
        if actions:
            allowed = self.callback.cls.http_method_names
            return sorted(
                m.upper() for m in actions if m in allowed and m not in ("head", "options")
            )
        view_class = getattr(self.callback, "view_class", None) or getattr(
            self.callback, "cls", None
        )
        return sorted(
            m.upper()
            for m in ("get", "post", "put", "patch", "delete")
            if view_class is not None and hasattr(view_class, m)
        )

    @property
    def required_scopes(self) -> tuple[str, ...]:
        view_class = getattr(self.callback, "cls", None) or getattr(
            self.callback, "view_class", None
        )
        return tuple(getattr(view_class, "required_scopes", ()))


def _walk(patterns: list[Any], prefix: str) -> Iterator[Route]:
    for entry in patterns:
        regex = prefix + entry.pattern.regex.pattern.lstrip("^")
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, regex.rstrip("$"))
        elif isinstance(entry, URLPattern) and entry.name:
            yield Route(entry.name, regex, entry.callback)


def api_routes() -> list[Route]:
    """Every named route under /api/v1/, once per name."""
    seen: dict[str, Route] = {}
    for route in _walk(get_resolver().url_patterns, "^"):
        if route.regex.startswith("^api/v1/") and route.name not in seen:
            seen[route.name] = route
    return list(seen.values())
