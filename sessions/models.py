"""Avatar sessions: one row per provider session, its state machine and its event log.

``starting → active → stopping → closed``; every change is compare-and-set on ``status`` and
``version`` (see ``sessions.services``), so concurrent stoppers, reapers and finalisers close a
session exactly once. Rows are never deleted: a closed session is the record of what ran.
"""

from __future__ import annotations

from django.db import models

from systimz.orgs.models import OrgOwnedModel


class SessionStatus(models.TextChoices):
    STARTING = "starting", "Starting"
    ACTIVE = "active", "Active"
    STOPPING = "stopping", "Stopping"
    CLOSED = "closed", "Closed"


LIVE_STATUSES = (SessionStatus.STARTING, SessionStatus.ACTIVE, SessionStatus.STOPPING)


class CloseReason(models.TextChoices):
    USER = "user", "Stopped by the user"
    IDLE = "idle", "Idle too long"
    TIMEOUT = "timeout", "Reached its time limit"
    DISCONNECTED = "disconnected", "The page went away"
    PROVIDER = "provider", "Ended by the provider"
    ERROR = "error", "Failed"


class AvatarSession(OrgOwnedModel):
    avatar = models.ForeignKey(
        "avatars.Avatar", null=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    avatar_slug = models.SlugField(max_length=60)
    provider = models.CharField(max_length=20)
    quality = models.CharField(max_length=10)
    credential = models.ForeignKey(
        "orgs.ProviderCredential",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    provider_session_id = models.CharField(max_length=200, blank=True, db_index=True)
    status = models.CharField(
        max_length=10, choices=SessionStatus.choices, default=SessionStatus.STARTING
    )
    close_reason = models.CharField(max_length=20, choices=CloseReason.choices, blank=True)
    failure = models.TextField(blank=True, help_text="What went wrong, in words (no secrets).")
    end_user = models.CharField(max_length=200, blank=True)
    embed_origin = models.CharField(max_length=300, blank=True)
    media = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    next_seq = models.PositiveIntegerField(default=1)
    stop_pending = models.BooleanField(
        default=False, help_text="The provider stop has not landed yet; it is being retried."
    )
    stop_attempts = models.PositiveIntegerField(default=0)
    listeners = models.PositiveIntegerField(
        default=0, help_text="Players connected to the session's relay now."
    )
    disconnected_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When its last player went away; the reaper stops it after the grace period.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organisation", "status"]),
            models.Index(fields=["credential", "status"]),
            models.Index(fields=["status", "expires_at"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "provider_session_id"],
                condition=~models.Q(provider_session_id=""),
                name="one_row_per_provider_session",
            )
        ]

    def __str__(self) -> str:
        return f"{self.avatar_slug} {self.status} {self.pk}"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES


class SessionEvent(OrgOwnedModel):
    """The append-only log of a session: what the server and the avatar did, in ``seq`` order."""

    session = models.ForeignKey(AvatarSession, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=40)
    payload = models.JSONField(default=dict)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [models.UniqueConstraint(fields=["session", "seq"], name="event_seq")]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.seq} {self.type}"
