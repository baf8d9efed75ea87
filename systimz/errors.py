"""The one error vocabulary of Systimz (contract, "Errors").

Services raise these; the API's exception handler and the WebSocket consumers render them.
Each class fixes the contract's ``code`` and HTTP status; instances carry the human message,
optional per-field messages and optional response headers (``Retry-After``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class SystimzError(Exception):
    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400
    default_message: ClassVar[str] = "The request could not be completed."

    def __init__(
        self,
        message: str | None = None,
        *,
        fields: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.fields = dict(fields) if fields else None
        self.headers = dict(headers) if headers else {}
        super().__init__(self.message)

    def as_dict(self) -> dict[str, Any]:
        """The contract's envelope: ``{"error": {"code", "message", "fields"?}}``."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        return {"error": body}


class InvalidInput(SystimzError):
    code, status, default_message = "invalid", 400, "The request is not valid."


class Unauthenticated(SystimzError):
    code, status, default_message = (
        "unauthenticated",
        401,
        "A valid API key is required: send Authorization: Bearer <key>.",
    )


class Forbidden(SystimzError):
    code, status, default_message = "forbidden", 403, "This key may not do that."


class NotFound(SystimzError):
    code, status, default_message = "not_found", 404, "Not found."


class MethodNotAllowed(SystimzError):
    code, status, default_message = "method_not_allowed", 405, "Method not allowed."


class NotAcceptable(SystimzError):
    code, status, default_message = "not_acceptable", 406, "Cannot answer in a requested format."


class Conflict(SystimzError):
    code, status, default_message = (
        "conflict",
        409,
        "The object is not in a state that allows this.",
    )


class TooLarge(SystimzError):
    code, status, default_message = "too_large", 413, "The request or file is too large."


class UnsupportedMediaType(SystimzError):
    code, status, default_message = (
        "unsupported_media_type",
        415,
        "The request's content type is not supported here.",
    )


class _TooMany(SystimzError):
    status = 429

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: int | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        headers = (
            {"Retry-After": str(max(1, int(retry_after)))} if retry_after is not None else None
        )
        super().__init__(message, fields=fields, headers=headers)
        self.retry_after = retry_after


class ConcurrencyLimit(_TooMany):
    code, default_message = (
        "concurrency_limit",
        "The organisation's concurrent session limit is reached.",
    )


class QuotaExceeded(_TooMany):
    code, default_message = "quota_exceeded", "The organisation's monthly minutes are used up."


class RateLimited(_TooMany):
    code, default_message = "rate_limited", "Too many requests; slow down."


class ProviderError(SystimzError):
    code, status, default_message = "provider_error", 502, "The avatar provider returned an error."


class ProviderUnavailable(SystimzError):
    code, status, default_message = (
        "provider_unavailable",
        503,
        "The avatar provider is not available right now.",
    )


class ServiceUnavailable(SystimzError):
    """Our own database is unreachable for a moment (a restart, a fail-over, no free
    connection): the request changed nothing and may be retried. Not in the contract's list of
    codes, which covers the provider's outages only; a 503 with ``Retry-After`` is what a client
    can act on, where a 500 says "bug"."""

    code, status, default_message = (
        "service_unavailable",
        503,
        "The service is briefly unavailable; retry shortly.",
    )

    def __init__(self, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ServerError(SystimzError):
    code, status, default_message = "server_error", 500, "Something went wrong on our side."
