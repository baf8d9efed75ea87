"""The player's credentials: a token signed by the server, bound to one session.

It authorises what a browser may do with that one session (its WebSocket, the local avatar's
audio) and nothing else: no API key ever reaches a browser. A token issued to a page is also
bound to that page's origin: the relay refuses it from any other. Tokens expire after
``PLAYER_TOKEN_MAX_AGE_SECONDS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core import signing

from sessions.models import AvatarSession

PLAYER_SIGNING_NAMESPACE = "systimz.player"


@dataclass(frozen=True)
class PlayerGrant:
    session: AvatarSession
    origin: str | None  # the page origin the token was issued to, if any


def player_token(session: AvatarSession, *, origin: str | None = None) -> str:
    """A token for ``session``'s player (from ``origin`` only, when given)."""
    claims: dict[str, str] = {"s": str(session.pk)}
    if origin:
        claims["o"] = origin
    return signing.dumps(claims, salt=PLAYER_SIGNING_NAMESPACE, compress=True)


def read_player_token(token: str, session_id: str) -> PlayerGrant | None:
    """What ``token`` grants, if it is genuine, unexpired and issued for ``session_id``."""
    try:
        claims = signing.loads(
            token, salt=PLAYER_SIGNING_NAMESPACE, max_age=settings.PLAYER_TOKEN_MAX_AGE_SECONDS
        )
    except signing.BadSignature:  # includes SignatureExpired
        return None
    if not isinstance(claims, dict) or claims.get("s") != str(session_id):
        return None
    session = (
        AvatarSession.objects.select_related("organisation", "avatar").filter(pk=session_id).first()
    )
    if session is None:
        return None
    return PlayerGrant(session=session, origin=claims.get("o"))


def session_from_token(token: str, session_id: str) -> AvatarSession | None:
    grant = read_player_token(token, session_id)
    return grant.session if grant else None
