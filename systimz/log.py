"""Defence in depth for logs: secrets are never logged on purpose, and this filter masks
anything that looks like one if a library or an exception message carries it anyway."""

from __future__ import annotations

import logging
import re

_PATTERNS = [
    # Systimz API keys: stz_<prefix>_<secret>; keep the prefix, which identifies the key.
    (re.compile(r"\b(stz_[0-9a-f]{8})_[A-Za-z0-9_\-]{8,}"), r"\1_[redacted]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}"), r"\1[redacted]"),
    (re.compile(r"(?i)(x-api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(api_key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"), r"\1[redacted]"),
    (re.compile(r"(?i)([?&]token=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"\bwhsec_[A-Za-z0-9_\-]{8,}"), "whsec_[redacted]"),
]


def redact(text: str) -> str:
    """Mask every secret-looking substring of ``text``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Rewrites a record's final message with secrets masked; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not lose the record
            return True
        cleaned = redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True
