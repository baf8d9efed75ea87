"""Configuration: a bad environment stops start-up naming the variable; production settings
pass Django's deployment checklist."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
GOOD_PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "k" * 20 + "-production-secret-key-with-enough-entropy-0123456789",
    "SYSTIMZ_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "ALLOWED_HOSTS": "systimz.example.com",
}


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # A clean slate: only what a process needs to run, then the variables under test.
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    base |= {"SYSTIMZ_ENV_FILE": "", "DJANGO_SETTINGS_MODULE": "systimz.settings", **env}
    return subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("DEBUG", "maybe", "expected one of"),
        ("DATABASE_URL", "mysql://db/x", "postgres://"),
        ("DATABASE_URL", "postgres://", "names no database"),
        ("REDIS_URL", "http://localhost:6379", "redis://"),
        ("REDIS_URL", "redis://localhost:notaport/0", "port"),
        ("SYSTIMZ_ENCRYPTION_KEYS", "not-a-key", "key 1 is not a Fernet key"),
        ("HEYGEN_API_BASE", "api.heygen.com", "http(s) URL"),
        ("LIVEAVATAR_API_BASE", "ftp://x", "http(s) URL"),
        ("SECURE_HSTS_SECONDS", "a year", "whole number"),
        ("LOG_LEVEL", "LOUD", "expected DEBUG"),
        ("API_RATE_LIMIT", "lots", "expected <count>/"),
    ],
)
def test_a_malformed_variable_stops_start_up_naming_it(variable, value, words):
    result = _manage("check", **(GOOD_PRODUCTION | {variable: value}))
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert f"{variable}: " in last_line
    assert words in last_line


@pytest.mark.parametrize("variable", ["SECRET_KEY", "SYSTIMZ_ENCRYPTION_KEYS", "ALLOWED_HOSTS"])
def test_production_refuses_to_start_without_its_secrets(variable):
    env = {k: v for k, v in GOOD_PRODUCTION.items() if k != variable}
    result = _manage("check", **env)
    assert result.returncode != 0
    assert f"{variable}: must" in result.stderr


def test_check_deploy_is_clean_under_production_settings():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **GOOD_PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_embedded_defaults_need_nothing_but_debug():
    result = _manage(
        "shell",
        "-v",
        "0",
        "-c",
        "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], "
        "s.CHANNEL_LAYERS['default']['BACKEND'], s.CELERY_BROKER_URL)",
        DEBUG="1",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "channels.layers.InMemoryChannelLayer",
        "filesystem://",
    ]


def test_database_and_redis_urls_switch_to_postgres_and_redis():
    result = _manage(
        "shell",
        "-v",
        "0",
        "-c",
        "from django.conf import settings as s; d = s.DATABASES['default']; "
        "print(d['ENGINE'], d['NAME'], d['HOST'], s.CHANNEL_LAYERS['default']['BACKEND'], "
        "s.CELERY_BROKER_URL, s.CACHES['default']['BACKEND'])",
        DEBUG="1",
        DATABASE_URL="postgres://u:p@db.internal:5433/systimz",
        REDIS_URL="redis://cache.internal:6380/2",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "systimz",
        "db.internal",
        "channels_redis.pubsub.RedisPubSubChannelLayer",
        "redis://cache.internal:6380/2",
        "django.core.cache.backends.redis.RedisCache",
    ]
