"""The provider interface: what Systimz asks of every avatar provider.

Implementations: ``heygen`` (Interactive Avatar), ``liveavatar`` and ``local``. They take base
URLs and keys as arguments, never read settings or the database, and return frozen
dataclasses, never raw provider JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

SpeakMode = Literal["repeat", "chat"]


@dataclass(frozen=True)
class Voice:
    voice_id: str
    rate: float = 1.0
    emotion: str | None = None  # excited | serious | friendly | soothing | broadcaster


@dataclass(frozen=True)
class SessionRequest:
    avatar_id: str
    quality: Literal["high", "medium", "low"] = "medium"
    voice: Voice | None = None
    language: str | None = None
    knowledge_base_id: str | None = None  # a knowledge base kept at the provider
    knowledge_prompt: str | None = None  # or a prompt built from ours
    idle_timeout_seconds: int | None = None
    max_duration_seconds: int | None = None


@dataclass(frozen=True)
class ProviderSession:
    session_id: str
    media: dict[str, Any]  # what the browser needs, e.g. {"kind": "livekit", "url", "access_token"}
    duration_limit_seconds: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    duration_ms: float | None = None


@dataclass(frozen=True)
class ActiveSession:
    session_id: str
    status: str
    created_at: datetime | None = None


class AvatarProvider(Protocol):
    name: str

    def create(self, request: SessionRequest) -> ProviderSession:
        """Create a session. Costs money: never retried once the request may have arrived;
        a lost answer is found again by ``list_active``."""
        ...

    def start(self, session_id: str) -> None:
        """Start the created session (media begins)."""
        ...

    def speak(self, session_id: str, text: str, mode: SpeakMode = "repeat") -> TaskResult:
        """Make the avatar say ``text`` (repeat) or answer it (chat, the provider's LLM)."""
        ...

    def interrupt(self, session_id: str) -> None:
        """Stop the current speech and drop queued tasks."""
        ...

    def keep_alive(self, session_id: str) -> None:
        """Reset the provider's idle timer."""
        ...

    def stop(self, session_id: str) -> None:
        """End the session. Idempotent: a session the provider no longer knows, or has
        closed, counts as stopped."""
        ...

    def list_active(self) -> list[ActiveSession]:
        """The sessions the provider holds open for this key (for reconciliation)."""
        ...

    def close(self) -> None:
        """Release the client's connections."""
        ...
