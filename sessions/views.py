"""People-facing pages."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from avatars.selectors import published_avatar_get


def talk_page(request: HttpRequest, org_slug: str, avatar_slug: str) -> HttpResponse:
    """The page where a person converses with a published avatar."""
    avatar = published_avatar_get(org_slug=org_slug, avatar_slug=avatar_slug)
    if avatar is None:
        raise Http404("No such avatar")
    return render(request, "talk/page.html", {"avatar": avatar})
