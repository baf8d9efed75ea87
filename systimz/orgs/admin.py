from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest

from systimz.orgs import services
from systimz.orgs.admin_base import (
    EncryptedKeyAdmin,
    EncryptedKeyForm,
    OrgScopedAdmin,
    member_org_id,
)
from systimz.orgs.models import ApiKey, Organisation, ProviderCredential, Scope, User

LIMIT_FIELDS = (
    "concurrent_sessions_limit",
    "session_seconds_limit",
    "idle_timeout_seconds_limit",
    "monthly_minutes_limit",
)


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "plan", "created_at"]
    list_filter = ["plan"]
    search_fields = ["slug", "name"]
    readonly_fields = ["effective_limits", "created_at"]
    fieldsets = [
        (None, {"fields": ["slug", "name", "plan", "created_at"]}),
        (
            "Limits (enterprise only; blank keeps the plan default)",
            {"fields": [*LIMIT_FIELDS, "effective_limits"]},
        ),
    ]

    @admin.display(description="Limits in force")
    def effective_limits(self, obj: Organisation) -> str:
        limits = obj.limits
        minutes = limits.monthly_minutes if limits.monthly_minutes is not None else "unlimited"
        return (
            f"{limits.concurrent_sessions} concurrent sessions, {limits.session_seconds} s per "
            f"session, idle after {limits.idle_timeout_seconds} s, {minutes} minutes a month"
        )

    def get_queryset(self, request: HttpRequest) -> Any:
        queryset = super().get_queryset(request)
        return queryset if request.user.is_superuser else queryset.filter(pk=member_org_id(request))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:  # members may rename, not re-plan
            fields += ["slug", "plan", *LIMIT_FIELDS]
        return fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


@admin.register(User)
class SystimzUserAdmin(UserAdmin):
    list_display = ["username", "email", "organisation", "is_staff", "is_superuser", "is_active"]
    list_filter = ["organisation", "is_staff", "is_superuser", "is_active"]
    fieldsets = [*UserAdmin.fieldsets, ("Organisation", {"fields": ["organisation"]})]
    add_fieldsets = [
        *UserAdmin.add_fieldsets,
        ("Organisation", {"fields": ["organisation", "is_staff"]}),
    ]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


class ApiKeyAddForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, widget=forms.CheckboxSelectMultiple, initial=list(Scope.values)
    )

    class Meta:
        model = ApiKey
        fields = ["name", "scopes"]


@admin.register(ApiKey)
class ApiKeyAdmin(OrgScopedAdmin):
    list_display = ["name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["created_at", "last_used_at", "revoked_at"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "scopes", "created_at", "last_used_at", "revoked_at"]
    exclude = ["key_hash"]
    actions = ["revoke"]

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj else []

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            fields = ["name", "scopes"]
            return ["organisation", *fields] if request.user.is_superuser else fields
        return ["name", *self.readonly_fields]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        org = form.cleaned_data.get("organisation") or request.user.organisation
        issued = services.api_key_create(
            org=org, name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"]
        )
        obj.pk = issued.api_key.pk
        obj.refresh_from_db()
        messages.warning(
            request,
            f"The new key is {issued.secret} — copy it now: it is shown only this once.",
        )

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        for api_key in queryset:
            services.api_key_revoke(api_key=api_key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are revoked, never deleted: their history stays auditable


class ProviderCredentialForm(EncryptedKeyForm):
    class Meta:
        model = ProviderCredential
        fields = ["provider", "plan"]


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(EncryptedKeyAdmin):
    form = ProviderCredentialForm
    list_display = ["provider", "plan", "masked_key", "key_id", "updated_at"]
    list_filter = ["provider", "plan"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "provider"] if obj else fields
