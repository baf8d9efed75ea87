"""Organisations, their members, API keys and provider credentials."""

from __future__ import annotations

import uuid
from typing import ClassVar

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models

from systimz.orgs import crypto, limits
from systimz.orgs.limits import Limits


class Plan(models.TextChoices):
    TRIAL = "trial", "Trial"
    ENTERPRISE = "enterprise", "Enterprise"


class Scope(models.TextChoices):
    MANAGE = "manage", "Manage"
    SESSIONS = "sessions", "Sessions"
    BILLING = "billing", "Billing"


class CredentialProvider(models.TextChoices):
    HEYGEN = "heygen", "HeyGen Interactive Avatar"
    LIVEAVATAR = "liveavatar", "HeyGen LiveAvatar"


def _in_range(name: str, value: int | None, bounds: tuple[int, int]) -> dict[str, str]:
    if value is None or bounds[0] <= value <= bounds[1]:
        return {}
    return {name: f"Must be between {bounds[0]} and {bounds[1]}."}


class Organisation(models.Model):
    """A tenant. Enterprise organisations may override each limit; a blank field keeps the
    plan's default. Trial limits are fixed."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    plan = models.CharField(max_length=20, choices=Plan.choices, default=Plan.TRIAL)
    concurrent_sessions_limit = models.PositiveIntegerField(null=True, blank=True)
    session_seconds_limit = models.PositiveIntegerField(null=True, blank=True)
    idle_timeout_seconds_limit = models.PositiveIntegerField(null=True, blank=True)
    monthly_minutes_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Blank: unlimited."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def limits(self) -> Limits:
        if self.plan == Plan.TRIAL:
            return limits.TRIAL
        base = limits.ENTERPRISE_DEFAULT
        return Limits(
            concurrent_sessions=self.concurrent_sessions_limit or base.concurrent_sessions,
            session_seconds=self.session_seconds_limit or base.session_seconds,
            idle_timeout_seconds=self.idle_timeout_seconds_limit or base.idle_timeout_seconds,
            monthly_minutes=self.monthly_minutes_limit or base.monthly_minutes,
        )

    def clean(self) -> None:
        overrides = {
            "concurrent_sessions_limit": self.concurrent_sessions_limit,
            "session_seconds_limit": self.session_seconds_limit,
            "idle_timeout_seconds_limit": self.idle_timeout_seconds_limit,
            "monthly_minutes_limit": self.monthly_minutes_limit,
        }
        if self.plan == Plan.TRIAL:
            errors = {
                name: "Trial limits are fixed; switch the plan to enterprise to change them."
                for name, value in overrides.items()
                if value is not None
            }
        else:
            errors = {
                **_in_range(
                    "concurrent_sessions_limit",
                    self.concurrent_sessions_limit,
                    limits.CONCURRENT_SESSIONS_RANGE,
                ),
                **_in_range(
                    "session_seconds_limit",
                    self.session_seconds_limit,
                    limits.SESSION_SECONDS_RANGE,
                ),
                **_in_range(
                    "idle_timeout_seconds_limit",
                    self.idle_timeout_seconds_limit,
                    limits.IDLE_TIMEOUT_RANGE,
                ),
                **_in_range(
                    "monthly_minutes_limit",
                    self.monthly_minutes_limit,
                    limits.MONTHLY_MINUTES_RANGE,
                ),
            }
        if errors:
            raise ValidationError(errors)


class User(AbstractUser):
    """A person who logs into the admin. Members belong to one organisation and see only its
    objects; platform operators (superusers) have none and see everything."""

    organisation = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.CASCADE, related_name="members"
    )


class OrgQuerySet(models.QuerySet):
    def for_org(self, org: Organisation) -> OrgQuerySet:
        """The only way in for tenant code: everything else starts from an organisation."""
        return self.filter(organisation=org)


class OrgOwnedModel(models.Model):
    """Base of every tenant table: a non-null, indexed organisation on the row itself, so no
    query ever scopes through a join."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="%(app_label)s_%(class)s_set"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgQuerySet.as_manager()

    class Meta:
        abstract = True


class ApiKey(OrgOwnedModel):
    """A secret for the REST API. Only its SHA-256 is stored (the secret has 256 bits of
    entropy, so a slow hash adds nothing); the prefix identifies it in lists and logs."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=8, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class EncryptedKeyModel(OrgOwnedModel):
    """Base of every row that holds a tenant's third-party API key, encrypted at rest.

    The ciphertext is bound to ``<cipher_purpose>:<row id>:org:<organisation id>``, so it
    cannot be moved to another row. ``rotate_encryption_keys`` re-encrypts every subclass."""

    cipher_purpose: ClassVar[str]

    encrypted_api_key = models.TextField(editable=False)
    key_id = models.CharField(max_length=12, editable=False, db_index=True)
    last4 = models.CharField(max_length=4, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @property
    def _context(self) -> str:
        return f"{self.cipher_purpose}:{self.pk}:org:{self.organisation_id}"

    def set_api_key(self, api_key: str) -> None:
        self.encrypted_api_key, self.key_id = crypto.encrypt(api_key, context=self._context)
        self.last4 = api_key[-4:]

    def reveal_api_key(self) -> str:
        """The plaintext key, for the outbound call only. Never serialise or log it."""
        return crypto.decrypt(self.encrypted_api_key, context=self._context)

    def rotate(self) -> bool:
        """Re-encrypt under the current first key; False when already there."""
        if self.key_id == crypto.current_key_id():
            return False
        self.encrypted_api_key, self.key_id = crypto.reencrypt(
            self.encrypted_api_key, context=self._context
        )
        return True


class ProviderCredential(EncryptedKeyModel):
    """An organisation's API key for a remote avatar provider."""

    cipher_purpose = "provider-credential"

    provider = models.CharField(max_length=20, choices=CredentialProvider.choices)
    plan = models.CharField(max_length=20, choices=Plan.choices, default=Plan.TRIAL)

    class Meta:
        ordering = ["provider"]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "provider"], name="one_credential_per_provider"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_provider_display()} …{self.last4}"

    def __repr__(self) -> str:
        return f"<ProviderCredential {self.pk} {self.provider} …{self.last4}>"
