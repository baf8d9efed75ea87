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
    next_stop_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When the reaper next retries a stop that has not landed."
    )
    state_changed_at = models.DateTimeField(null=True, blank=True)
    idle_timeout_seconds = models.PositiveIntegerField(
        default=120, help_text="The organisation's idle timeout when the session started."
    )
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
            models.Index(fields=["status", "last_activity_at"]),
            models.Index(fields=["stop_pending", "next_stop_attempt_at"]),
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


class UsageKind(models.TextChoices):
    SESSION = "session", "Session"
    CORRECTION = "correction", "Correction"


class UsageRecord(OrgOwnedModel):
    """The usage ledger: one row per closed session, written in the transaction that closes it
    (a unique constraint makes a second impossible). Never edited: a correction is a new row
    of kind ``correction`` with signed amounts, counted on the corrected session's day while
    that month is open and in the current month once it is over (``usage_correct``).

    Billable minutes are the session's seconds from ``started_at`` (the provider session
    running) to ``ended_at``, rounded up to whole minutes per session; a session that never
    started bills nothing. ``speaking_seconds`` is how long the avatar spoke (from its
    ``avatar_stop_talking`` events), for insight, never for billing."""

    session = models.ForeignKey(AvatarSession, on_delete=models.PROTECT, related_name="usage")
    kind = models.CharField(max_length=12, choices=UsageKind.choices, default=UsageKind.SESSION)
    avatar = models.ForeignKey(
        "avatars.Avatar", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    avatar_slug = models.SlugField(max_length=60)
    quality = models.CharField(max_length=10)
    provider = models.CharField(max_length=20)
    end_user = models.CharField(max_length=200, blank=True)
    embed_origin = models.CharField(max_length=300, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(db_index=True)
    session_seconds = models.IntegerField()
    billable_minutes = models.IntegerField()
    speaking_seconds = models.IntegerField(default=0)
    tasks = models.IntegerField(default=0)
    close_reason = models.CharField(max_length=20, blank=True)
    note = models.TextField(blank=True, help_text="Why a correction was made.")

    class Meta:
        ordering = ["-ended_at"]
        indexes = [models.Index(fields=["organisation", "ended_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["session"],
                condition=models.Q(kind="session"),
                name="one_usage_row_per_session",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.session_id} {self.billable_minutes} min"


class ProviderOrphan(OrgOwnedModel):
    """A session a provider held open that Systimz did not know as live, and what
    reconciliation did about it."""

    credential = models.ForeignKey(
        "orgs.ProviderCredential", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    provider = models.CharField(max_length=20)
    provider_session_id = models.CharField(max_length=200)
    stopped = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "provider_session_id"], name="one_orphan_row"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.provider_session_id}"
