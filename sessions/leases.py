"""Leases in the shared cache: a role one holder keeps until it lets go or stops renewing.

Used for the local avatar's speaking floor and the relay's media-room forwarder. Best effort by
design (the cache is Redis in production, per process otherwise): what must never happen twice
is guarded in the database, not here.
"""

from __future__ import annotations

from django.core.cache import cache


def lease_claim(key: str, owner: str, ttl: float) -> bool:
    """Take the lease for ``owner``, or renew it if ``owner`` holds it; False if another does."""
    if cache.add(key, owner, timeout=ttl):
        return True
    if cache.get(key) == owner:
        cache.touch(key, timeout=ttl)
        return True
    return False


def lease_release(key: str, owner: str) -> None:
    """Let go of the lease if ``owner`` holds it."""
    if cache.get(key) == owner:
        cache.delete(key)
