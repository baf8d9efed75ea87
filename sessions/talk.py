"""The public talk page, its session start and the embed.

``POST /talk/<org>/<avatar>/sessions`` starts a session without an API key: for published
avatars only, from the site itself or the avatar's allowed origins only (a foreign or missing
Origin is 403), rate-limited per client address and per organisation, and one live session per
visitor (a browser, by a signed cookie): a visitor who starts again, a reload, gets the session
they already have, with a fresh token, instead of a second one.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_exempt
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from avatars.models import Avatar
from avatars.origins import normalise_origin
from avatars.selectors import published_avatar_get
from sessions import lifecycle
from sessions.api.serializers import SessionSerializer
from sessions.models import LIVE_STATUSES, AvatarSession
from sessions.player import player_token
from systimz import errors
from systimz.api.throttling import TalkClientThrottle, TalkOrganisationThrottle

VISITOR_COOKIE = "systimz_visitor"
VISITOR_SALT = "systimz.visitor"
VISITOR_MAX_AGE = 30 * 24 * 3600


def site_origin(request: HttpRequest) -> str:
    return normalise_origin(f"{request.scheme}://{request.get_host()}")


def page_origins(avatar: Avatar) -> list[str]:
    return list(dict.fromkeys([*avatar.allowed_origins, *settings.PLAYER_EXTRA_ORIGINS]))


def _frame_policy(response: HttpResponse, avatar: Avatar) -> HttpResponse:
    """Only the site itself and the avatar's allowed origins may frame the player (django-csp
    applies this over the site's policy, whose frame-ancestors is 'none'); the player's
    socket is ws(s): on this host."""
    response._csp_replace = {  # type: ignore[attr-defined]
        "frame-ancestors": ["'self'", *page_origins(avatar)],
    }
    connect = ["ws:", "wss:"]
    if avatar.provider != "local":  # the provider's media room (LiveKit)
        connect += settings.PLAYER_MEDIA_CONNECT_SRC
    response._csp_update = {"connect-src": connect}  # type: ignore[attr-defined]
    return response


def _allowed_parent(raw: object, avatar: Avatar) -> str:
    """The embedding page's origin, if it is one the avatar allows (else "")."""
    if not isinstance(raw, str) or not raw:
        return ""
    try:
        origin = normalise_origin(raw)
    except ValueError:
        return ""
    return origin if origin in page_origins(avatar) else ""


@xframe_options_exempt  # framing is governed by CSP frame-ancestors (the allowed origins)
def talk_page(request: HttpRequest, org_slug: str, avatar_slug: str) -> HttpResponse:
    """The page where a person converses with a published avatar (also the embed's frame)."""
    avatar = published_avatar_get(org_slug=org_slug, avatar_slug=avatar_slug)
    if avatar is None:
        raise Http404("No such avatar")
    context = {
        "avatar": avatar,
        "embedded": request.GET.get("embed") == "1",
        "start_url": reverse("talk-start", args=[org_slug, avatar_slug]),
        "limits": avatar.organisation.limits,
        "parent_origin": _allowed_parent(request.GET.get("parent"), avatar),
    }
    return _frame_policy(render(request, "talk/page.html", context), avatar)


def embed_script(request: HttpRequest, org_slug: str, avatar_slug: str) -> HttpResponse:
    """``<script src=".../embed.js" async></script>``: mounts the player in an isolated frame
    where the script tag stands (or in ``data-systimz-target``'s element)."""
    avatar = published_avatar_get(org_slug=org_slug, avatar_slug=avatar_slug)
    if avatar is None:
        raise Http404("No such avatar")
    page = request.build_absolute_uri(reverse("talk-page", args=[org_slug, avatar_slug]))
    response = render(
        request,
        "talk/embed.js",
        {"frame_url": f"{page}?embed=1", "title": avatar.name},
        content_type="text/javascript; charset=utf-8",
    )
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"
    return response


class TalkSessionStart(APIView):
    """Start (or rejoin) this visitor's session with a published avatar."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes = [TalkClientThrottle, TalkOrganisationThrottle]
    schema = None  # a page's endpoint, not part of the API's schema

    def post(self, request: Request, org_slug: str, avatar_slug: str) -> Response:
        avatar = published_avatar_get(org_slug=org_slug, avatar_slug=avatar_slug)
        if avatar is None:
            raise errors.NotFound("No such avatar.")
        origin = self._origin(request, avatar)
        visitor = self._visitor(request)
        existing = (
            AvatarSession.objects.for_org(avatar.organisation)
            .filter(end_user=f"visitor:{visitor}", status__in=LIVE_STATUSES)
            .first()
        )
        if existing is not None and existing.avatar_id != avatar.pk:
            raise errors.ConcurrencyLimit(
                "You already have a conversation open; end it first.", retry_after=60
            )
        quality = request.data.get("quality") if isinstance(request.data, dict) else None
        if quality not in (None, "high", "medium", "low"):
            raise errors.InvalidInput(
                "quality is high, medium or low.", fields={"quality": ["Invalid."]}
            )
        if existing is not None:
            session, code = existing, status.HTTP_200_OK
        else:
            session = lifecycle.session_open(
                org=avatar.organisation,
                avatar=avatar,
                quality=quality,
                end_user=f"visitor:{visitor}",
                embed_origin=_allowed_parent(
                    request.data.get("embed_origin") if isinstance(request.data, dict) else None,
                    avatar,
                )
                or origin,
            )
            code = status.HTTP_201_CREATED
        body = SessionSerializer(session).data
        body["player"]["token"] = player_token(session, origin=origin)
        response = Response(body, status=code)
        response.set_cookie(
            VISITOR_COOKIE,
            signing.dumps(visitor, salt=VISITOR_SALT),
            max_age=VISITOR_MAX_AGE,
            httponly=True,
            # In a frame on another site only SameSite=None cookies are kept (HTTPS only).
            samesite="None" if request.is_secure() else "Lax",
            secure=request.is_secure(),
        )
        return response

    def _origin(self, request: Request, avatar: Avatar) -> str:
        raw = request.headers.get("Origin")
        try:
            origin = normalise_origin(raw or "")
        except ValueError:
            raise errors.Forbidden("Sessions start only from the avatar's own pages.") from None
        if origin != site_origin(request) and origin not in page_origins(avatar):
            raise errors.Forbidden("This site may not start sessions with this avatar.")
        return origin

    def _visitor(self, request: Request) -> str:
        try:
            value = signing.loads(
                request.COOKIES.get(VISITOR_COOKIE, ""),
                salt=VISITOR_SALT,
                max_age=VISITOR_MAX_AGE,
            )
        except signing.BadSignature:
            value = None
        return value if isinstance(value, str) and value else secrets.token_hex(12)
