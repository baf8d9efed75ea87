"""Production settings for the header probe (T22), with one test-only change: static files
are collected into ``SYSTIMZ_TEST_STATIC_ROOT`` (a temporary directory) instead of the
checkout's ``staticfiles/``, with the manifest but without whitenoise's compression (slow to
build, irrelevant to headers). Everything security-related is ``systimz.settings`` as is."""

import os
from pathlib import Path

from systimz.settings import *  # noqa: F403

STATIC_ROOT = Path(os.environ["SYSTIMZ_TEST_STATIC_ROOT"])
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}
