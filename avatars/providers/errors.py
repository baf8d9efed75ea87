"""Typed failures of avatar providers. Plain Python: providers know nothing of Django or HTTP
status codes of our own API; the sessions services translate these into the contract's
errors (502 provider_error, 503 provider_unavailable, 429 ...)."""

from __future__ import annotations


class ProviderError(Exception):
    """A provider call failed. ``code`` is the provider's own error code, when it gave one."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id


class ProviderAuthError(ProviderError):
    """The provider refused the API key."""


class ProviderNotFound(ProviderError):
    """The session (or the avatar) does not exist at the provider."""


class ProviderConflict(ProviderError):
    """The session is in a state that does not allow the call ("session state wrong")."""


class ProviderConcurrencyLimit(ProviderError):
    """The provider's own concurrent-session cap for this key is reached."""


class ProviderInvalidRequest(ProviderError):
    """The provider rejected what we sent (an avatar or voice it does not know, ...)."""


class ProviderRateLimited(ProviderError):
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """The provider could not be reached, or answered 5xx. ``connected`` says whether the
    request may have reached it (so whether a create may have happened)."""

    retryable = True

    def __init__(self, message: str, *, connected: bool = True, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.connected = connected


class ProviderTimeout(ProviderUnavailable):
    """No answer in time. The request was sent: the call may have taken effect."""


class ProviderBadResponse(ProviderError):
    """The provider answered something we cannot read (not JSON, missing fields)."""
