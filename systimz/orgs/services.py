"""Writes for organisations, API keys, members and provider credentials."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from systimz import errors
from systimz.orgs import crypto
from systimz.orgs.models import (
    ApiKey,
    EncryptedKeyModel,
    Organisation,
    Plan,
    ProviderCredential,
    Scope,
    User,
)

log = logging.getLogger("systimz.orgs")

KEY_TAG = "stz_"
_PREFIX_LEN = 8
ORG_ADMIN_GROUP = "Organisation admins"
# Models an organisation admin may manage in the Django admin (app label, model name).
ORG_ADMIN_MODELS = [
    ("orgs", "organisation"),
    ("orgs", "apikey"),
    ("orgs", "providercredential"),
    ("avatars", "avatar"),
    ("avatars", "voicepreset"),
    ("knowledge", "knowledgebase"),
    ("knowledge", "document"),
    ("knowledge", "chunk"),
    ("knowledge", "llmendpoint"),
    ("knowledge", "unansweredquestion"),
    ("avatar_sessions", "avatarsession"),
    ("avatar_sessions", "sessionevent"),
    ("avatar_sessions", "usagerecord"),
    ("avatar_sessions", "providerorphan"),
    ("webhooks", "webhook"),
    ("webhooks", "webhookdelivery"),
    ("webhooks", "webhookattempt"),
]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def organisation_create(*, slug: str, name: str, plan: str = Plan.TRIAL) -> Organisation:
    """Create an organisation; raises InvalidInput on a bad or taken slug or plan."""
    org = Organisation(slug=slug, name=name, plan=plan)
    try:
        org.full_clean()
    except ValidationError as exc:
        raise errors.InvalidInput(
            "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items()),
            fields=exc.message_dict,
        ) from exc
    org.save()
    log.info("org.created slug=%s plan=%s", org.slug, org.plan)
    return org


def normalise_scopes(scopes: Iterable[str]) -> list[str]:
    """Known scopes, each once, in the canonical order; raises InvalidInput otherwise."""
    wanted = list(scopes)
    unknown = sorted(set(wanted) - set(Scope.values))
    if unknown:
        raise errors.InvalidInput(
            f"Unknown scope {', '.join(unknown)}.", fields={"scopes": [f"Unknown: {unknown}"]}
        )
    if not wanted:
        raise errors.InvalidInput(
            "An API key needs at least one scope.", fields={"scopes": ["At least one scope."]}
        )
    return [scope for scope in Scope.values if scope in wanted]


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # shown once, never stored


def api_key_create(*, org: Organisation, name: str, scopes: Iterable[str]) -> IssuedKey:
    """Issue a new key. The secret exists only in the return value."""
    scope_list = normalise_scopes(scopes)
    for _attempt in range(5):
        prefix = secrets.token_hex(_PREFIX_LEN // 2)
        secret = f"{KEY_TAG}{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                api_key = ApiKey.objects.create(
                    organisation=org,
                    name=name,
                    prefix=prefix,
                    key_hash=_hash(secret),
                    scopes=scope_list,
                )
        except IntegrityError:  # a prefix collision: one in four billion, try another
            continue
        log.info("api_key.created org=%s prefix=%s scopes=%s", org.slug, prefix, scope_list)
        return IssuedKey(api_key=api_key, secret=secret)
    raise errors.ServerError("Could not allocate an API key prefix.")


def api_key_authenticate(*, secret: str) -> ApiKey | None:
    """The active key for ``secret``, or None. Records the last-used time at most once a
    minute per key, so authentication is not a write on every request."""
    if not secret.startswith(KEY_TAG) or len(secret) < len(KEY_TAG) + _PREFIX_LEN + 2:
        return None
    prefix = secret[len(KEY_TAG) : len(KEY_TAG) + _PREFIX_LEN]
    api_key = (
        ApiKey.objects.select_related("organisation")
        .filter(prefix=prefix, revoked_at__isnull=True)
        .first()
    )
    if api_key is None or not hmac.compare_digest(api_key.key_hash, _hash(secret)):
        return None
    now = timezone.now()
    resolution = timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION_SECONDS)
    if api_key.last_used_at is None or now - api_key.last_used_at >= resolution:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke a key. Idempotent: a revoked key keeps its first revocation time."""
    if api_key.revoked_at is None:
        now = timezone.now()
        ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
        api_key.refresh_from_db(fields=["revoked_at"])
        log.info("api_key.revoked org=%s prefix=%s", api_key.organisation_id, api_key.prefix)
    return api_key


def _check_provider_key(api_key: str) -> str:
    key = api_key.strip()
    if len(key) < 8 or any(ch.isspace() for ch in key):
        raise errors.InvalidInput(
            "The provider API key looks wrong.",
            fields={"api_key": ["At least 8 characters, no spaces."]},
        )
    return key


def provider_credential_create(
    *, org: Organisation, provider: str, api_key: str, plan: str = Plan.TRIAL
) -> ProviderCredential:
    """Store an organisation's key for a provider, encrypted. One per provider."""
    credential = ProviderCredential(organisation=org, provider=provider, plan=plan)
    credential.set_api_key(_check_provider_key(api_key))
    try:
        with transaction.atomic():
            credential.save()
    except IntegrityError:
        raise errors.InvalidInput(
            "This organisation already has a credential for that provider; update it instead.",
            fields={"provider": ["A credential for this provider exists."]},
        ) from None
    log.info("credential.created org=%s provider=%s", org.slug, provider)
    return credential


def provider_credential_update(
    *, credential: ProviderCredential, api_key: str | None = None, plan: str | None = None
) -> ProviderCredential:
    """Replace the key and/or the plan of a credential."""
    if api_key is not None:
        credential.set_api_key(_check_provider_key(api_key))
    if plan is not None:
        credential.plan = plan
    credential.save()
    log.info(
        "credential.updated org=%s provider=%s", credential.organisation_id, credential.provider
    )
    return credential


@dataclass(frozen=True)
class RotationReport:
    rotated: int
    already_current: int
    failed: int

    @property
    def total(self) -> int:
        return self.rotated + self.already_current + self.failed


def _encrypted_models() -> list[type[EncryptedKeyModel]]:
    return [m for m in apps.get_models() if issubclass(m, EncryptedKeyModel)]


def encrypted_keys_rotate(*, batch_size: int = 500) -> RotationReport:
    """Re-encrypt every stored third-party key (provider credentials, LLM endpoints, ...)
    under the first key of SYSTIMZ_ENCRYPTION_KEYS.

    Idempotent and resumable: rows already under the current key are skipped, and each
    batch commits on its own with its rows locked, so a concurrent update is never lost."""
    rotated = current = failed = 0
    for model in _encrypted_models():
        last_pk = None
        while True:
            with transaction.atomic():
                batch = model.objects.select_for_update().order_by("pk")
                if last_pk is not None:
                    batch = batch.filter(pk__gt=last_pk)
                rows = list(batch[:batch_size])
                for row in rows:
                    try:
                        changed = row.rotate()
                    except crypto.DecryptionError:
                        # Under a key no longer configured, or tampered with: leave it for an
                        # operator (the report counts it) and go on with the others.
                        log.error("secret.rotation_failed model=%s id=%s", model.__name__, row.pk)
                        failed += 1
                        continue
                    if changed:
                        row.save(update_fields=["encrypted_api_key", "key_id", "updated_at"])
                        rotated += 1
                    else:
                        current += 1
            if len(rows) < batch_size:
                break
            last_pk = rows[-1].pk
    log.info("secret.rotation rotated=%s current=%s failed=%s", rotated, current, failed)
    return RotationReport(rotated=rotated, already_current=current, failed=failed)


def org_admin_group() -> Group:
    """The group whose permissions an organisation admin has in the Django admin."""
    group, _ = Group.objects.get_or_create(name=ORG_ADMIN_GROUP)
    perms = Permission.objects.none()
    for app_label, model in ORG_ADMIN_MODELS:
        perms |= Permission.objects.filter(
            content_type__app_label=app_label, content_type__model=model
        )
    group.permissions.set(perms)
    return group


def member_create(
    *, org: Organisation, username: str, email: str = "", password: str | None = None
) -> tuple[User, str]:
    """Create an admin-site member of ``org``; returns the user and the password (generated
    when not given)."""
    if User.objects.filter(username=username).exists():
        raise errors.InvalidInput(
            f"The username {username!r} is taken.", fields={"username": ["Taken."]}
        )
    password = password or secrets.token_urlsafe(16)
    user = User.objects.create_user(
        username=username, email=email, password=password, organisation=org, is_staff=True
    )
    user.groups.add(org_admin_group())
    log.info("member.created org=%s username=%s", org.slug, username)
    return user, password
