"""Organisation scoping for the Django admin.

Platform operators (superusers) see every organisation. A member sees only the rows of their
own organisation, never picks an organisation (it is set from their membership), and every
foreign-key choice is limited to their organisation's objects."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from systimz.orgs.models import OrgOwnedModel


def member_org_id(request: HttpRequest) -> Any:
    """The organisation a non-superuser acts for, or None."""
    return getattr(request.user, "organisation_id", None)


def _is_operator(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_superuser)


class OrgScopedAdminMixin:
    """For ModelAdmin and inlines of organisation-owned models."""

    def get_queryset(self, request: HttpRequest) -> models.QuerySet:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        if _is_operator(request):
            return queryset
        org_id = member_org_id(request)
        return queryset.filter(organisation_id=org_id) if org_id else queryset.none()

    def _allowed(self, request: HttpRequest) -> bool:
        return _is_operator(request) or member_org_id(request) is not None

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._allowed(request) and super().has_module_permission(request)  # type: ignore[misc]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._allowed(request) and super().has_view_permission(request, obj)  # type: ignore[misc]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self._allowed(request) and super().has_add_permission(request, *args)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._allowed(request) and super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._allowed(request) and super().has_delete_permission(request, obj)  # type: ignore[misc]

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> Any:
        exclude = list(super().get_exclude(request, obj) or [])  # type: ignore[misc]
        if not _is_operator(request):
            exclude.append("organisation")
        return exclude

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        related = db_field.related_model
        if (
            not _is_operator(request)
            and isinstance(related, type)
            and issubclass(related, OrgOwnedModel)
        ):
            kwargs["queryset"] = related.objects.filter(organisation_id=member_org_id(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]


class ReadOnlyAdminMixin:
    """For records nobody edits in the admin (logs, ledgers, outboxes): view only. Put it
    before the admin class in the bases."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OrgScopedAdmin(OrgScopedAdminMixin, admin.ModelAdmin):
    list_select_related = ("organisation",)

    def get_list_filter(self, request: HttpRequest) -> Any:
        filters = list(super().get_list_filter(request))
        return [*filters, "organisation"] if _is_operator(request) else filters

    def get_list_display(self, request: HttpRequest) -> Any:
        columns = list(super().get_list_display(request))
        return [*columns, "organisation"] if _is_operator(request) else columns

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        org_id = member_org_id(request)
        if _is_operator(request) or org_id is None:
            return form

        class MemberForm(form):  # type: ignore[valid-type,misc]
            """Binds the new row to the member's organisation before validation, so the
            per-organisation unique constraints are checked as field errors."""

            def __init__(self, *args: Any, **kw: Any) -> None:
                super().__init__(*args, **kw)
                if not self.instance.organisation_id:
                    self.instance.organisation_id = org_id

            def _get_validation_exclusions(self) -> Any:
                return super()._get_validation_exclusions() - {"organisation"}

        return MemberForm

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not _is_operator(request):
            obj.organisation_id = member_org_id(request)
        super().save_model(request, obj, form, change)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        instances = formset.save(commit=False)
        for instance in instances:
            if isinstance(instance, OrgOwnedModel) and not instance.organisation_id:
                instance.organisation_id = form.instance.organisation_id
            instance.save()
        for deleted in formset.deleted_objects:
            deleted.delete()
        formset.save_m2m()


class OrgScopedInline(OrgScopedAdminMixin, admin.TabularInline):
    extra = 0


class EncryptedKeyForm(forms.ModelForm):
    """A write-only key field: required on create, blank keeps the stored key."""

    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted; never shown again. Leave blank to keep the current key.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.instance._state.adding and not cleaned.get("api_key"):
            self.add_error("api_key", "Required for a new entry.")
        return cleaned


class EncryptedKeyAdmin(OrgScopedAdmin):
    """Admin of an ``EncryptedKeyModel``: shows ``…last4``, never the key or its ciphertext."""

    readonly_fields = ["masked_key", "key_id", "created_at", "updated_at"]

    @admin.display(description="Key")
    def masked_key(self, obj: Any) -> str:
        return f"\u2026{obj.last4}" if obj.last4 else "\u2014"

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if form.cleaned_data.get("api_key"):
            if not _is_operator(request):
                obj.organisation_id = member_org_id(request)  # the context binds the org
            obj.set_api_key(form.cleaned_data["api_key"])
        super().save_model(request, obj, form, change)
