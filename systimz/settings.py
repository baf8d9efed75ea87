"""The one settings module, driven by the environment (README, "Configuration").

With nothing set, Systimz runs embedded: SQLite, the in-memory channel layer, a filesystem
Celery broker, the local-memory cache and the built-in ``local`` avatar provider. The
variables of the contract switch each part to its production counterpart. A value that
cannot be used stops start-up with the variable's name (see ``systimz.env``).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import environ

from systimz.env import (
    EnvError,
    env_bool,
    env_database,
    env_fernet_keys,
    env_float,
    env_http_url,
    env_int,
    env_list,
    env_rate,
    env_redis_url,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL_DIR = BASE_DIR / ".local"

# A developer's `.env` (written by `make`) fills in what the real environment leaves unset.
# SYSTIMZ_ENV_FILE="" turns it off, as production and the configuration tests do.
_env_file = os.environ.get("SYSTIMZ_ENV_FILE", str(BASE_DIR / ".env"))
if _env_file and Path(_env_file).is_file():
    environ.Env.read_env(_env_file, overwrite=False)

_log = logging.getLogger("systimz.settings")

DEBUG = env_bool("DEBUG", default=False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise EnvError("SECRET_KEY", "must be set when DEBUG is off")
    # Development only: a per-process key. `make` writes a stable one into .env.
    SECRET_KEY = "dev-insecure-" + secrets.token_urlsafe(48)
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])

ENCRYPTION_KEYS = env_fernet_keys("SYSTIMZ_ENCRYPTION_KEYS")
if not ENCRYPTION_KEYS and not DEBUG:
    raise EnvError("SYSTIMZ_ENCRYPTION_KEYS", "must be set when DEBUG is off")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not ALLOWED_HOSTS and not DEBUG:
    raise EnvError("ALLOWED_HOSTS", "must name this site's host names when DEBUG is off")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

HEYGEN_API_BASE = env_http_url("HEYGEN_API_BASE", "https://api.heygen.com")
LIVEAVATAR_API_BASE = env_http_url("LIVEAVATAR_API_BASE", "https://api.liveavatar.com")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "csp",
    "systimz.orgs",
    "systimz.webhooks",
    "avatars",
    "sessions.apps.AvatarSessionsConfig",
    "knowledge",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
]

ROOT_URLCONF = "systimz.urls"
ASGI_APPLICATION = "systimz.asgi.application"
AUTH_USER_MODEL = "orgs.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Data -----------------------------------------------------------------------------------

_default_db = f"sqlite:///{LOCAL_DIR / 'db.sqlite3'}"
if not os.environ.get("DATABASE_URL"):
    LOCAL_DIR.mkdir(exist_ok=True)
DATABASES = {"default": env_database("DATABASE_URL", _default_db)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Short-lived connections: daphne serves from a thread pool, and a pooler (pgbouncer)
    # belongs in front of PostgreSQL when many processes run (docs/deployment.md).
    DATABASES["default"]["CONN_MAX_AGE"] = env_int(
        "DATABASE_CONN_MAX_AGE", 0, minimum=0, maximum=3600
    )
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = 5
else:
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    # Tests run on a file, not in memory: background threads (the local avatar's speakers)
    # write from their own connections, which SQLite's shared in-memory cache would refuse.
    # One file per test process, so two runs on one checkout do not share it.
    DATABASES["default"].setdefault("TEST", {}).setdefault(
        "NAME", str(LOCAL_DIR / f"test-db-{os.getpid()}.sqlite3")
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_redis_url("REDIS_URL")

if REDIS_URL:
    # The pub/sub layer: measured at a quarter of a core per 1,000 events/s on this machine
    # size, where the list-based core layer saturates near 2,000 (shared/reliability.md §5).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "systimz",
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery (systimz/celery.py reads every CELERY_* setting) --------------------------------

_celery_dir = LOCAL_DIR / "celery"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"visibility_timeout": 3600}
else:
    # Embedded broker: kombu's filesystem transport needs no server, so `make run` works anywhere.
    for _sub in ("queue", "processed", "results", "control"):
        (_celery_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_celery_dir / "queue"),
        "data_folder_out": str(_celery_dir / "queue"),
        "processed_folder": str(_celery_dir / "processed"),
        "control_folder": str(_celery_dir / "control"),  # broadcast (pidbox) exchanges
        "store_processed": False,
        "polling_interval": 0.1,
    }
    CELERY_RESULT_BACKEND = f"file://{_celery_dir / 'results'}"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
# Beat's static schedule. Each entry expires before the next is due, so a stalled worker never
# faces a backlog of ticks; the tasks are safe to run twice.
REAPER_INTERVAL_SECONDS = env_int("REAPER_INTERVAL_SECONDS", 5, minimum=1, maximum=300)
RECONCILE_INTERVAL_SECONDS = env_int("RECONCILE_INTERVAL_SECONDS", 60, minimum=10, maximum=3600)
# A claim still ``stopping`` this long is taken to have lost its finishing task (a killed
# worker) and is finished again by the next tick.
REAPER_STOPPING_STALE_SECONDS = env_int(
    "REAPER_STOPPING_STALE_SECONDS", 60, minimum=5, maximum=3600
)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "sessions-reap": {
        "task": "sessions.reap",
        "schedule": float(REAPER_INTERVAL_SECONDS),
        "options": {"expires": max(REAPER_INTERVAL_SECONDS - 0.5, 0.5)},
    },
    "sessions-reconcile": {
        "task": "sessions.reconcile",
        "schedule": float(RECONCILE_INTERVAL_SECONDS),
        "options": {"expires": RECONCILE_INTERVAL_SECONDS * 0.9},
    },
}

# --- Webhooks ---
# An endpoint must be https, except on these hosts (a local receiver in development).
WEBHOOK_HTTP_ALLOWED_HOSTS = env_list(
    "WEBHOOK_HTTP_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "::1"] if DEBUG else []
)
WEBHOOK_CONNECT_TIMEOUT_SECONDS = 3.0
WEBHOOK_READ_TIMEOUT_SECONDS = 10.0
# The wait after failed attempt n before attempt n + 1 (jittered ±20 %); one attempt more than
# delays, so 10 attempts over about 16 hours before a delivery is marked failed.
WEBHOOK_RETRY_DELAYS_SECONDS = [10, 30, 120, 600, 1800, 3600, 7200, 14400, 28800]
# The outbox sweep: enqueues due deliveries whose task was lost or never sent.
CELERY_BEAT_SCHEDULE["webhooks-retry-due"] = {
    "task": "webhooks.retry_due",
    "schedule": 30.0,
    "options": {"expires": 25},
}

# --- API ------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["systimz.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["systimz.api.permissions.HasScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON only; the document upload adds multipart itself (knowledge/api/views.py).
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "systimz.api.negotiation.StrictContentNegotiation",
    "DEFAULT_PAGINATION_CLASS": "systimz.api.pagination.Pagination",
    "DEFAULT_FILTER_BACKENDS": [
        "systimz.api.filters.StrictFilterBackend",  # django-filter, strict values
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["systimz.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "api_key": env_rate("API_RATE_LIMIT", "1200/minute"),
        "talk_client": env_rate("TALK_CLIENT_RATE_LIMIT", "10/minute"),
        "talk_organisation": env_rate("TALK_ORGANISATION_RATE_LIMIT", "600/minute"),
    },
    # Proxies in front of daphne whose X-Forwarded-For is trusted for client addresses.
    "NUM_PROXIES": env_int("NUM_PROXIES", 0, minimum=0, maximum=5),
    "EXCEPTION_HANDLER": "systimz.api.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Systimz API",
    "DESCRIPTION": (
        "Real-time interactive AI avatars: configure avatars, voices and knowledge, "
        "run provider sessions, read usage. Authenticate with `Authorization: Bearer <api key>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "systimz.api.schema.add_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "ProviderEnum": "avatars.models.Provider.choices",
        "PlanEnum": "systimz.orgs.models.Plan.choices",
        "DocumentFormatEnum": "knowledge.models.DocumentFormat.choices",
        "DocumentStatusEnum": "knowledge.models.DocumentStatus.choices",
        "SessionStatusEnum": "sessions.models.SessionStatus.choices",
    },
}

# Uploads: a document may be up to 10 MB (contract); the request may carry a little more.
DOCUMENT_MAX_BYTES = 10 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = DOCUMENT_MAX_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
# Documents up to this size are chunked in the request; larger ones by a Celery task.
KNOWLEDGE_INLINE_INGEST_BYTES = 256 * 1024
# Semantic retrieval (all-MiniLM-L6-v2 in numpy, `make install-semantic`), fused with full-text
# by reciprocal rank. Off by default; docs/knowledge.md and docs/benchmarks.md say what it gives.
KNOWLEDGE_SEMANTIC = env_bool("KNOWLEDGE_SEMANTIC", default=False)
# An LLM endpoint must be https, except on these hosts (a local model server in development).
LLM_HTTP_ALLOWED_HOSTS = env_list(
    "LLM_HTTP_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "::1"] if DEBUG else []
)
# HeyGen's knowledge prompt ("knowledge_base") has no documented limit: we keep it well short.
PROVIDER_KNOWLEDGE_MAX_CHARS = env_int(
    "PROVIDER_KNOWLEDGE_MAX_CHARS", 10_000, minimum=500, maximum=100_000
)
# Provider HTTP: a call that cannot connect, or waits this long for an answer, is a timeout
# (503 provider_unavailable; a create that may have arrived is never resent, see
# avatars/providers/http.py).
PROVIDER_CONNECT_TIMEOUT_SECONDS = env_float(
    "PROVIDER_CONNECT_TIMEOUT_SECONDS", 3.0, minimum=0.05, maximum=60.0
)
PROVIDER_READ_TIMEOUT_SECONDS = env_float(
    "PROVIDER_READ_TIMEOUT_SECONDS", 10.0, minimum=0.05, maximum=120.0
)

# Where this site is reached from the internet (https://avatars.example.com): the embed snippet
# shown in the admin points there. Empty: the snippet shows a path only.
PUBLIC_BASE_URL = env_str("PUBLIC_BASE_URL", "")
# Origins (besides the site's own and each avatar's allowed_origins) whose pages may open any
# session's relay: a separate front-end host of the operator's, for example.
PLAYER_EXTRA_ORIGINS = env_list("PLAYER_EXTRA_ORIGINS", [])
# Where remote providers' media rooms live (LiveKit Cloud for HeyGen and LiveAvatar): the talk
# page of a remote avatar may connect there.
PLAYER_MEDIA_CONNECT_SRC = env_list(
    "PLAYER_MEDIA_CONNECT_SRC", ["https://*.livekit.cloud", "wss://*.livekit.cloud"]
)
# A page whose player went away (a closed tab) has this long to come back before its session
# is stopped with reason "disconnected".
DISCONNECT_GRACE_SECONDS = env_int("DISCONNECT_GRACE_SECONDS", 30, minimum=5, maximum=3600)
# Unsent bytes daphne may hold for one WebSocket before it drops it (a client that stopped
# reading); the player reconnects and resumes from the log (systimz/ws_backpressure.py).
WS_SEND_BUFFER_LIMIT_BYTES = env_int(
    "WS_SEND_BUFFER_LIMIT_BYTES", 1024 * 1024, minimum=64 * 1024, maximum=1024 * 1024 * 1024
)

# A player token (a session's WebSocket and local audio) is honoured this long after it is issued;
# longer than any session may last.
PLAYER_TOKEN_MAX_AGE_SECONDS = env_int(
    "PLAYER_TOKEN_MAX_AGE_SECONDS", 6 * 3600, minimum=600, maximum=7 * 24 * 3600
)

# --- Security -------------------------------------------------------------------------------

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz/?$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0, maximum=63_072_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
if env_bool("SECURE_PROXY_SSL_HEADER", default=False):
    # Only behind a proxy that sets X-Forwarded-Proto itself (docs/deployment.md).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "media-src": ["'self'", "blob:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Static files, i18n ---------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
# In development whitenoise serves straight from the apps; production runs collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Logging --------------------------------------------------------------------------------

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise EnvError(
        "LOG_LEVEL", f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL}"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "systimz.log.RedactSecretsFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "daphne": {"level": "WARNING"},
    },
}

# --- Systimz --------------------------------------------------------------------------------

API_KEY_LAST_USED_RESOLUTION_SECONDS = 60
