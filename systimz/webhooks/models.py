"""Webhook endpoints of an organisation and the outbox of their deliveries.

A :class:`WebhookDelivery` row is written in the same transaction as the event it reports
(``services.webhook_emit``), so an event is delivered if and only if it happened. Each row keeps
the exact body it sends on every attempt (same ``id``), its attempt count and when it is next
due; :class:`WebhookAttempt` records what each attempt got back."""

from __future__ import annotations

from django.db import models

from systimz.orgs.models import EncryptedKeyModel, OrgOwnedModel


class EventType(models.TextChoices):
    SESSION_STARTED = "session.started", "Session started"
    SESSION_ENDED = "session.ended", "Session ended"
    USAGE_RECORDED = "usage.recorded", "Usage recorded"
    LIMIT_REACHED = "limit.reached", "Limit reached"


class Webhook(EncryptedKeyModel):
    """An endpoint the organisation registered. Its signing secret is stored encrypted (the
    ``EncryptedKeyModel`` columns; ``rotate_encryption_keys`` re-encrypts it) and shown to the
    organisation once, when it is made."""

    cipher_purpose = "webhook-secret"

    url = models.URLField(max_length=500)
    events = models.JSONField(default=list, help_text="The event types sent to this endpoint.")
    active = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["organisation", "active"])]

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"<Webhook {self.pk} {self.url}>"

    def set_secret(self, secret: str) -> None:
        self.set_api_key(secret)

    def reveal_secret(self) -> str:
        """The plaintext signing secret, to sign a delivery. Never serialise or log it."""
        return self.reveal_api_key()

    def subscribes_to(self, type_: str) -> bool:
        return type_ in (self.events or [])


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(OrgOwnedModel):
    """One event for one endpoint: the outbox row. ``body`` is the JSON object sent on every
    attempt, so its ``id`` (= ``event_id``) never changes; only the signature is fresh."""

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField()
    type = models.CharField(max_length=40, choices=EventType.choices)
    body = models.JSONField()
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a pending delivery is next due (while an attempt runs: its lease).",
    )
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When a delivery task was last sent to the queue."
    )
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["webhook", "event_id"], name="one_delivery_per_event")
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due"),
            models.Index(fields=["webhook", "-created_at"], name="webhook_delivery_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class WebhookAttempt(OrgOwnedModel):
    """What one attempt of a delivery got: a status code, or why there was none."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=200, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="one_row_per_attempt")
        ]

    def __str__(self) -> str:
        outcome = f"HTTP {self.status_code}" if self.status_code else self.error
        return f"attempt {self.number}: {outcome}"
