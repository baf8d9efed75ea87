"""Serializer plumbing shared by every organisation-owned resource."""

from __future__ import annotations

from typing import Any, ClassVar

from rest_framework import serializers

from systimz.orgs.models import Organisation


def request_organisation(serializer: serializers.Field | serializers.Serializer) -> Organisation:
    organisation = serializer.context.get("organisation")
    if organisation is None:
        raise RuntimeError("serializer used without an organisation in its context")
    return organisation


class OrgRelatedField(serializers.PrimaryKeyRelatedField):
    """A foreign key to another object of the caller's organisation. Another organisation's
    id is rejected with the same message as an id that does not exist."""

    default_error_messages = {
        "does_not_exist": "Not found.",
        "incorrect_type": "Expected an id (UUID), got {data_type}.",
    }

    def __init__(self, model: type, **kwargs: Any) -> None:
        self.model = model
        kwargs.setdefault("pk_field", serializers.UUIDField(format="hex_verbose"))
        super().__init__(**kwargs)

    def get_queryset(self) -> Any:
        if self.read_only:
            return None
        return self.model.objects.for_org(request_organisation(self))

    def run_validation(self, data: Any = serializers.empty) -> Any:
        # DRF turns "" into null for relations; the schema says a UUID or null, so "" is not
        # an id (it would silently clear the link).
        if data == "":
            self.fail("does_not_exist", pk_value=data)
        return super().run_validation(data)

    def to_internal_value(self, data: Any) -> Any:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            codes = exc.get_codes()
            if codes == ["invalid"]:  # a malformed UUID is also "not found"
                self.fail("does_not_exist", pk_value=data)
            raise


class OrgUniqueFieldsMixin:
    """Per-organisation uniqueness as field errors (the database constraint is the backstop).

    ``org_unique_fields = ("slug",)`` in the subclass."""

    org_unique_fields: ClassVar[tuple[str, ...]] = ()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)  # type: ignore[misc]
        model = self.Meta.model  # type: ignore[attr-defined]
        instance = getattr(self, "instance", None)
        for name in self.org_unique_fields:
            if name not in attrs:
                continue
            clash = model.objects.for_org(request_organisation(self)).filter(**{name: attrs[name]})
            if instance is not None:
                clash = clash.exclude(pk=instance.pk)
            if clash.exists():
                raise serializers.ValidationError(
                    {name: [f"Another {model._meta.verbose_name} has this {name}."]}
                )
        return attrs


class StrictStringsMixin:
    """Text fields take JSON strings only. DRF's CharField turns ``12`` or ``true`` into
    ``"12"``/``"True"``; the schema says ``string``, so a number is a 400, not stored text.
    And ``maxLength`` counts the text as sent (DRF checks it after trimming whitespace)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            wrong = {
                name: ["Not a valid string."]
                for name, field in self.fields.items()  # type: ignore[attr-defined]
                if isinstance(field, serializers.CharField)
                and not field.read_only
                and field.source != "*"
                and name in data
                and data[name] is not None
                and not isinstance(data[name], str)
            }
            # maxLength as the schema states it: before DRF trims surrounding whitespace.
            wrong |= {
                name: [f"Ensure this field has no more than {field.max_length} characters."]
                for name, field in self.fields.items()  # type: ignore[attr-defined]
                if isinstance(field, serializers.CharField)
                and getattr(field, "max_length", None) is not None
                and isinstance(data.get(name), str)
                and len(data[name]) > field.max_length
            }
            if wrong:
                raise serializers.ValidationError(wrong)
        return super().to_internal_value(data)  # type: ignore[misc]
