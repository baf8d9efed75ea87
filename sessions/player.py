"""The player's credentials: a token signed by the server, bound to one session.

It authorises what a browser may do with that one session (its WebSocket, the local avatar's
audio) and nothing else: no API key ever reaches a browser. Tokens expire after
``PLAYER_TOKEN_MAX_AGE_SECONDS`` and are useless once the session is closed for what changes
things (the relay refuses actions on a closed session).
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing

from sessions.models import AvatarSession

PLAYER_SIGNING_NAMESPACE = "systimz.player"


def player_token(session: AvatarSession) -> str:
    """A token for ``session``'s player."""
    return signing.dumps({"s": str(session.pk)}, salt=PLAYER_SIGNING_NAMESPACE, compress=True)


def session_from_token(token: str, session_id: str) -> AvatarSession | None:
    """The session ``token`` was issued for, if it is ``session_id``, genuine and unexpired."""
    try:
        claims = signing.loads(
            token, salt=PLAYER_SIGNING_NAMESPACE, max_age=settings.PLAYER_TOKEN_MAX_AGE_SECONDS
        )
    except signing.BadSignature:  # includes SignatureExpired
        return None
    if not isinstance(claims, dict) or claims.get("s") != str(session_id):
        return None
    return AvatarSession.objects.select_related("organisation").filter(pk=session_id).first()
