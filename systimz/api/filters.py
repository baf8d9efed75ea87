"""Strict list filters: a filter parameter that is present must hold a valid value.

django-filter reads ``?published=maybe`` (or ``?plan=``) as "no filter" and answers 200 with
the unfiltered list, which a client cannot tell from a filtered one. Here a boolean is
``true`` or ``false`` (as the schema documents it), an empty value is refused, and choice and
other form-field errors are the contract's ``400 invalid``."""

from __future__ import annotations

from typing import Any

from django_filters import BooleanFilter, FilterSet
from django_filters.rest_framework import DjangoFilterBackend

BOOLEAN_VALUES = ("true", "false")


class StrictFilterSet(FilterSet):
    def is_valid(self) -> bool:
        valid = super().is_valid()
        for name, filter_ in self.filters.items():
            if name not in self.data:
                continue
            values = self.data.getlist(name) if hasattr(self.data, "getlist") else [self.data[name]]
            for value in values:
                problem = self._problem(filter_, value)
                if problem is not None:
                    self.form.add_error(name, problem)
                    valid = False
                    break
        return valid

    @staticmethod
    def _problem(filter_: Any, value: str) -> str | None:
        if isinstance(filter_, BooleanFilter):
            return None if value in BOOLEAN_VALUES else "Use true or false."
        if value == "":
            return "An empty value is not a filter; leave the parameter out."
        return None


class StrictFilterBackend(DjangoFilterBackend):
    """``DEFAULT_FILTER_BACKENDS``' filter backend: every view's ``filterset_fields`` build a
    :class:`StrictFilterSet`, and an invalid filter raises (400), never falls back."""

    filterset_base = StrictFilterSet
    raise_exception = True
