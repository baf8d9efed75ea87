"""Celery shells for sessions: the reaper's tick, finishing one stop, retrying one stop, and
reconciliation. Every task takes ids, is time-limited, and is safe to run twice."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from avatars.models import Provider
from sessions import lifecycle, reaper
from sessions.models import AvatarSession, ProviderOrphan, SessionStatus
from sessions.providers import provider_for_credential
from sessions.reconcile import reconcile_credential
from systimz.orgs.models import ProviderCredential

log = logging.getLogger("systimz.sessions.reaper")


@shared_task(name="sessions.reap", acks_late=True, time_limit=60, soft_time_limit=50)
def reap_sessions() -> dict[str, Any]:
    """One reaper tick: claim what must end, and hand each claim to its own task."""
    claimed = reaper.sessions_claim_due()
    for session_id in claimed.ids:
        finish_stop.delay(session_id)
    retries = reaper.stops_due()
    for session_id in retries:
        retry_stop.delay(session_id)
    return {
        **{reason: len(ids) for reason, ids in claimed.by_reason.items()},
        "stale": len(claimed.stale),
        "stop_retries": len(retries),
    }


@shared_task(name="sessions.finish_stop", acks_late=True, time_limit=120, soft_time_limit=100)
def finish_stop(session_id: str) -> str:
    """Stop one claimed session at its provider and close it with its usage."""
    session = (
        AvatarSession.objects.select_related("organisation", "credential")
        .filter(pk=session_id)
        .first()
    )
    if session is None:
        return "missing"
    lifecycle.session_finish_stop(session=session)
    return session.status


@shared_task(name="sessions.retry_stop", acks_late=True, time_limit=120, soft_time_limit=100)
def retry_stop(session_id: str) -> bool:
    """Try once more to stop a closed session's provider session."""
    session = AvatarSession.objects.select_related("credential").filter(pk=session_id).first()
    if session is None or session.status != SessionStatus.CLOSED:
        return False
    return lifecycle.session_retry_stop(session=session)


@shared_task(name="sessions.reconcile", acks_late=True, time_limit=60, soft_time_limit=50)
def reconcile_providers() -> int:
    """Queue reconciliation for every remote-provider credential."""
    ids = list(
        ProviderCredential.objects.filter(
            provider__in=[Provider.HEYGEN, Provider.LIVEAVATAR]
        ).values_list("pk", flat=True)
    )
    for credential_id in ids:
        reconcile_one.delay(str(credential_id))
    return len(ids)


@shared_task(name="sessions.reconcile_one", acks_late=True, time_limit=300, soft_time_limit=270)
def reconcile_one(credential_id: str) -> dict[str, int]:
    """Stop the provider sessions of one credential that Systimz does not know as live, and
    record each one found (``ProviderOrphan``)."""
    credential = ProviderCredential.objects.filter(pk=credential_id).first()
    if credential is None:
        return {"listed": 0, "stopped": 0, "failed": 0}
    report = reconcile_credential(credential, provider_for_credential(credential))
    for provider_session_id, stopped in [(s, True) for s in report.stopped] + [
        (s, False) for s in report.failed
    ]:
        orphan, _ = ProviderOrphan.objects.get_or_create(
            provider=credential.provider,
            provider_session_id=provider_session_id,
            defaults={"organisation_id": credential.organisation_id, "credential": credential},
        )
        ProviderOrphan.objects.filter(pk=orphan.pk).update(
            stopped=stopped,
            attempts=orphan.attempts + 1,
            last_error="" if stopped else "stop failed; retried next run",
        )
    return {"listed": report.listed, "stopped": len(report.stopped), "failed": len(report.failed)}
