"""Provider keys: encrypted at rest, rotated under a new key, never returned or logged."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from systimz.orgs import crypto
from systimz.orgs.models import ProviderCredential
from tests import factories

URL = "/api/v1/provider-credentials/"
SECRET = "hg-live-7f3a9c1e5b2d4a6f8e0c"


def _raw_column(pk) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT encrypted_api_key FROM orgs_providercredential WHERE id = %s",
            [pk.hex] if connection.vendor == "sqlite" else [str(pk)],
        )
        return cursor.fetchone()[0]


def test_create_returns_last4_only_and_stores_ciphertext(tenant, caplog):
    caplog.set_level(logging.DEBUG)
    response = tenant.client.post(
        URL, {"provider": "heygen", "api_key": SECRET, "plan": "enterprise"}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    assert body["last4"] == SECRET[-4:]
    assert "api_key" not in body
    assert SECRET not in response.content.decode()
    credential = ProviderCredential.objects.get(pk=body["id"])
    raw = _raw_column(credential.pk)
    assert SECRET not in raw
    assert SECRET[-12:] not in raw
    assert credential.reveal_api_key() == SECRET
    for response in (tenant.client.get(URL), tenant.client.get(f"{URL}{body['id']}/")):
        assert SECRET not in response.content.decode()
    assert SECRET not in caplog.text


def test_one_credential_per_provider_and_the_key_can_be_replaced(tenant):
    first = tenant.client.post(URL, {"provider": "heygen", "api_key": SECRET}, format="json").json()
    again = tenant.client.post(URL, {"provider": "heygen", "api_key": SECRET + "x"}, format="json")
    assert again.status_code == 400
    assert list(again.json()["error"]["fields"]) == ["provider"]

    replaced = tenant.client.patch(
        f"{URL}{first['id']}/", {"api_key": "new-key-12345678"}, format="json"
    )
    assert replaced.status_code == 200
    assert replaced.json()["last4"] == "5678"
    assert ProviderCredential.objects.get(pk=first["id"]).reveal_api_key() == "new-key-12345678"
    plan_only = tenant.client.put(f"{URL}{first['id']}/", {"plan": "enterprise"}, format="json")
    assert plan_only.status_code == 200
    assert ProviderCredential.objects.get(pk=first["id"]).reveal_api_key() == "new-key-12345678"
    moved = tenant.client.patch(f"{URL}{first['id']}/", {"provider": "liveavatar"}, format="json")
    assert moved.status_code == 400


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"provider": "d-id", "api_key": SECRET}, "provider"),
        ({"provider": "heygen"}, "api_key"),
        ({"provider": "heygen", "api_key": "short"}, "api_key"),
        ({"provider": "heygen", "api_key": SECRET, "plan": "gold"}, "plan"),
    ],
)
def test_validation(tenant, data, field):
    response = tenant.client.post(URL, data, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_rotation_reencrypts_every_row_under_the_first_key(tenant, outsider, settings):
    old_key = settings.ENCRYPTION_KEYS[0]
    secrets = {}
    for n in range(7):
        org = factories.OrganisationFactory()
        credential = factories.ProviderCredentialFactory(
            organisation=org, api_key=f"key-number-{n:04d}"
        )
        secrets[credential.pk] = f"key-number-{n:04d}"
    before = {pk: _raw_column(pk) for pk in secrets}
    new_key = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [new_key, old_key]

    call_command("rotate_encryption_keys", "--batch-size", "3")

    new_id = crypto.key_id(new_key)
    assert set(ProviderCredential.objects.values_list("key_id", flat=True)) == {new_id}
    for pk in secrets:
        assert _raw_column(pk) != before[pk]
    settings.ENCRYPTION_KEYS = [new_key]  # the old key is gone: every row still decrypts
    for pk, secret in secrets.items():
        assert ProviderCredential.objects.get(pk=pk).reveal_api_key() == secret


def test_rotation_is_idempotent(tenant, settings, capsys):
    factories.ProviderCredentialFactory(organisation=tenant.org)
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *settings.ENCRYPTION_KEYS]
    call_command("rotate_encryption_keys")
    call_command("rotate_encryption_keys")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("rotated=1 already_current=0 failed=0")  # only the new row
    assert out[1].startswith("rotated=0 already_current=1 failed=0")


def test_a_row_under_an_unknown_key_fails_rotation_loudly(tenant, settings):
    credential = factories.ProviderCredentialFactory(organisation=tenant.org)
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the old key was dropped
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="1 credential"):
        call_command("rotate_encryption_keys")
    with pytest.raises(crypto.DecryptionError):
        ProviderCredential.objects.get(pk=credential.pk).reveal_api_key()


def test_a_ciphertext_copied_into_another_row_does_not_decrypt(tenant, outsider):
    mine = factories.ProviderCredentialFactory(organisation=tenant.org, provider="liveavatar")
    theirs = ProviderCredential.objects.for_org(outsider.org).first()
    mine.encrypted_api_key = theirs.encrypted_api_key
    mine.save()
    with pytest.raises(crypto.DecryptionError, match="another record"):
        ProviderCredential.objects.get(pk=mine.pk).reveal_api_key()


def test_repr_and_str_never_show_the_key(tenant):
    credential = factories.ProviderCredentialFactory(organisation=tenant.org, api_key=SECRET)
    assert SECRET not in repr(credential)
    assert SECRET not in str(credential)
