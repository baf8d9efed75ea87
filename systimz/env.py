"""Strict readers for the environment variables of the contract.

Every reader either returns a valid value or raises ``ImproperlyConfigured`` with the
variable's name in the message, so a typo stops start-up instead of running with a surprise.
django-environ parses the URLs; the checks it does not make are made here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_DB_ENGINES = {
    "django.db.backends.postgresql",
    "django.db.backends.sqlite3",
}


class EnvError(ImproperlyConfigured):
    """A variable is set to a value Systimz cannot use."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.variable = name


def _raw(name: str, environ_: Mapping[str, str] | None) -> str | None:
    value = (environ_ if environ_ is not None else os.environ).get(name)
    return None if value is None else value.strip()


def env_bool(name: str, default: bool, environ_: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ_)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise EnvError(name, f"expected one of 1/0/true/false/yes/no/on/off, got {value!r}")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int,
    maximum: int,
    environ_: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ_)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise EnvError(name, f"expected a whole number, got {value!r}") from None
    if not minimum <= number <= maximum:
        raise EnvError(name, f"expected a number from {minimum} to {maximum}, got {number}")
    return number


def env_float(
    name: str,
    default: float,
    *,
    minimum: float,
    maximum: float,
    environ_: Mapping[str, str] | None = None,
) -> float:
    value = _raw(name, environ_)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise EnvError(name, f"expected a number, got {value!r}") from None
    if not minimum <= number <= maximum:  # also refuses nan
        raise EnvError(name, f"expected a number from {minimum} to {maximum}, got {number}")
    return number


def env_str(name: str, default: str = "", environ_: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ_)
    return default if value is None else value


def env_list(name: str, default: list[str], environ_: Mapping[str, str] | None = None) -> list[str]:
    value = _raw(name, environ_)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_http_url(name: str, default: str, environ_: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ_) or default
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise EnvError(name, f"expected an http(s) URL such as {default}, got {value!r}")
    return value.rstrip("/")


def env_database(
    name: str, default: str, environ_: Mapping[str, str] | None = None
) -> dict[str, Any]:
    value = _raw(name, environ_) or default
    try:
        config = environ.Env.db_url_config(value)
    except Exception as exc:
        raise EnvError(name, f"cannot parse {value!r}: {exc}") from exc
    if config.get("ENGINE") not in _DB_ENGINES:
        raise EnvError(name, f"expected a postgres:// or sqlite:/// URL, got {value!r}")
    if not config.get("NAME"):
        raise EnvError(name, f"the URL {value!r} names no database")
    return config


def env_redis_url(name: str, environ_: Mapping[str, str] | None = None) -> str | None:
    value = _raw(name, environ_)
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
        raise EnvError(name, f"expected a redis:// or rediss:// URL, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise EnvError(name, f"the port in {value!r} is not a number") from None
    return value


def env_fernet_keys(name: str, environ_: Mapping[str, str] | None = None) -> list[str]:
    keys = env_list(name, [], environ_)
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            raise EnvError(
                name, f"key {position} is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
    return keys


def env_rate(name: str, default: str, environ_: Mapping[str, str] | None = None) -> str:
    """A DRF throttle rate such as ``1200/minute``."""
    value = _raw(name, environ_) or default
    count, _, period = value.partition("/")
    if not count.isdigit() or int(count) < 1 or period[:1] not in {"s", "m", "h", "d"}:
        raise EnvError(name, f"expected <count>/<second|minute|hour|day>, got {value!r}")
    return value
