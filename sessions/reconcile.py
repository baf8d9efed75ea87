"""Reconciliation: stop every session a provider holds open that Systimz does not know as live.

Orphans come from a create whose answer was lost (a timeout after the request arrived) or a
crash between the provider's answer and our commit. Sessions younger than ``grace`` are left
alone, so a start still in flight is never stopped under its feet. The periodic schedule comes
with the reaper; this is the service it calls.
"""

from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from avatars.providers import errors as perrors
from avatars.providers.base import AvatarProvider
from sessions.models import LIVE_STATUSES, AvatarSession
from systimz.orgs.models import ProviderCredential

log = logging.getLogger("systimz.sessions.reconcile")
GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class ReconcileReport:
    listed: int
    stopped: list[str]
    failed: list[str]


def reconcile_credential(
    credential: ProviderCredential, provider: AvatarProvider, *, grace: timedelta = GRACE
) -> ReconcileReport:
    """Stop the provider sessions of ``credential`` that have no live row here."""
    with closing(provider):
        listed = provider.list_active()
        known = set(
            AvatarSession.objects.filter(
                credential=credential, status__in=LIVE_STATUSES
            ).values_list("provider_session_id", flat=True)
        )
        cutoff = timezone.now() - grace
        stopped, failed = [], []
        for remote in listed:
            if remote.session_id in known:
                continue
            if remote.created_at is not None and remote.created_at > cutoff:
                continue  # maybe a start still in flight
            try:
                provider.stop(remote.session_id)
            except perrors.ProviderError as exc:
                log.warning(
                    "reconcile.stop_failed session=%s error=%s",
                    remote.session_id,
                    type(exc).__name__,
                )
                failed.append(remote.session_id)
                continue
            log.warning(
                "reconcile.orphan_stopped credential=%s session=%s",
                credential.pk,
                remote.session_id,
            )
            stopped.append(remote.session_id)
    return ReconcileReport(listed=len(listed), stopped=stopped, failed=failed)
