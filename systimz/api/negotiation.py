"""Content negotiation that refuses an empty ``?format=``.

DRF reads ``?format=`` (``URL_FORMAT_OVERRIDE``) as "no override" when it is empty and answers
in the default format; a client asking for ``format=`` gets JSON without being told. An unknown
format is already a 404 (DRF); an empty one is the contract's 400 here."""

from __future__ import annotations

from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request

from systimz import errors


class StrictContentNegotiation(DefaultContentNegotiation):
    def select_renderer(
        self, request: Request, renderers: list[Any], format_suffix: str | None = None
    ) -> tuple[Any, str]:
        override = self.settings.URL_FORMAT_OVERRIDE
        if override and request.query_params.get(override, None) == "":
            raise errors.InvalidInput(
                f"{override}: name a format or leave the parameter out.",
                fields={override: ["Not a format."]},
            )
        return super().select_renderer(request, renderers, format_suffix)
