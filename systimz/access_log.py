"""No secrets in daphne's access log.

Daphne writes its access log itself (``daphne.access.AccessLogGenerator``, not the logging
module), and for HTTP it writes the full URI with the query string, so a player token passed as
``/media/local/...?token=...`` (an ``<audio src>`` cannot send a header) lands in the log in
plain text. ``systimz.log.RedactSecretsFilter`` only sees logging records; this wraps daphne's
writer with the same ``redact``.

Installed by ``systimz/asgi.py``, which daphne imports before it serves anything; idempotent.
"""

from __future__ import annotations

from typing import Any

from systimz.log import redact

_MARK = "_systimz_redacting"


def install_daphne_redaction() -> bool:
    """Make daphne's access log redact secrets; False when daphne is not installed."""
    try:
        from daphne.access import AccessLogGenerator
    except ImportError:  # pragma: no cover - daphne is a runtime dependency
        return False
    original = AccessLogGenerator.write_entry
    if getattr(original, _MARK, False):
        return True

    def write_entry(self: Any, host: Any, date: Any, request: Any, *args: Any, **kwargs: Any):
        return original(self, host, date, redact(str(request)), *args, **kwargs)

    setattr(write_entry, _MARK, True)
    AccessLogGenerator.write_entry = write_entry
    return True
