"""T21 — secrets at rest and in transit.

Pass criterion (reliability.md §4.2): a provider API key appears in plaintext nowhere — not in
a database dump (``manage.py dumpdata``), not in any log record of the representative flows
(create a credential; start, speak and stop a HeyGen-emulator session; a provider error; a
webhook delivery; all captured at DEBUG from the root logger), not in any HTTP response of
those flows (a credential reads back as ``last4`` only), not in the collected static files or
``sessions/static``; a ciphertext swapped into another organisation's row fails authentication
(the envelope binds the row and organisation, ``systimz.orgs.crypto``) and the API answers with
the contract's error, not a 500; ``rotate_encryption_keys`` over N rows leaves 0 rows on the old
key and 100 % decrypt.

Scale: ``SYSTIMZ_ROTATION_ROWS`` rows (default 1,000; the slow variant 10,000).
"""

from __future__ import annotations

import io
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from knowledge.models import LLMEndpoint
from sessions.models import AvatarSession
from systimz.orgs import crypto
from systimz.orgs.models import Plan, ProviderCredential
from systimz.webhooks import services as webhook_services
from systimz.webhooks.tasks import webhook_deliver
from tests import factories
from tests.emulators.heygen import HeyGenEmulator
from tests.webhooks.conftest import celery_app, make_webhook, receiver  # noqa: F401

SECRET = f"hg_live_SECRET_{uuid.uuid4().hex}"
OTHER_SECRET = f"hg_live_SECRET_{uuid.uuid4().hex}"
BASE_DIR = Path(__file__).resolve().parents[2]


class _Everything(logging.Handler):
    """Every record, formatted with its traceback, as the console handler would write it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs() -> Any:
    root = logging.getLogger()
    handler = _Everything()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def heygen(settings) -> Any:
    emulator = HeyGenEmulator(keys={SECRET: "enterprise", OTHER_SECRET: "enterprise"}).start()
    settings.HEYGEN_API_BASE = emulator.base_url
    yield emulator
    emulator.stop()


def _heygen_avatar(org: Any, slug: str = "anna") -> Any:
    return factories.AvatarFactory(
        organisation=org, slug=slug, provider="heygen", provider_avatar_id="Anna_public_3_20240108"
    )


def _assert_clean(text: str, where: str) -> None:
    assert SECRET not in text, f"the provider key in {where}"
    assert SECRET[-12:] not in text, f"part of the provider key in {where}"


def test_no_plaintext_key_in_logs_responses_or_dumps(
    tenant,
    heygen,
    receiver,  # noqa: F811
    all_logs,
    settings,
):
    responses: list[bytes] = []

    def call(method: str, path: str, body: Any = None) -> Any:
        response = getattr(tenant.client, method)(path, body, format="json")
        responses.append(response.content)
        return response

    created = call(
        "post",
        "/api/v1/provider-credentials/",
        {"provider": "heygen", "api_key": SECRET, "plan": Plan.ENTERPRISE},
    )
    assert created.status_code == 201, created.content
    assert created.json()["last4"] == SECRET[-4:]
    credential_id = created.json()["id"]
    assert call("get", f"/api/v1/provider-credentials/{credential_id}/").json()["last4"]
    call("get", "/api/v1/provider-credentials/")

    _heygen_avatar(tenant.org)
    hook = make_webhook(tenant.org, f"{receiver.url}/in")
    session = call("post", "/api/v1/sessions/", {"avatar": "anna"})
    assert session.status_code == 201, session.content
    session_id = session.json()["id"]
    assert call("post", f"/api/v1/sessions/{session_id}/speak", {"text": "hi"}).status_code == 202
    assert call("post", f"/api/v1/sessions/{session_id}/stop").status_code == 200

    heygen.fail_next("streaming.new", "status", status=400, times=5)
    failed = call("post", "/api/v1/sessions/", {"avatar": "anna"})
    assert failed.status_code in (502, 503), failed.content

    [delivery, *_] = webhook_services.webhook_emit(
        org=tenant.org, type_="session.ended", data={"session_id": session_id, "reason": "user"}
    )
    assert webhook_deliver(str(delivery.pk)) == "delivered"
    assert receiver.wait_for(1)
    assert hook.secret

    # Logs: every record, formatted, and the emulator saw the key (so it really was used).
    assert any(r["headers"].get("x-api-key") == SECRET for r in heygen.requests)
    assert all_logs.lines, "no log records: the check would be void"
    for line in all_logs.lines:
        _assert_clean(line, "a log record")
    for body in responses:
        _assert_clean(body.decode(errors="replace"), "an API response")
    # Webhook bodies leave the building too.
    for request in receiver.requests:
        _assert_clean(request.body.decode(errors="replace"), "a webhook body")

    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    assert ProviderCredential.objects.for_org(tenant.org).count() == 1
    _assert_clean(dump.getvalue(), "dumpdata")
    assert ProviderCredential.objects.get(pk=credential_id).reveal_api_key() == SECRET


def test_no_key_pattern_in_static_files(settings, tmp_path):
    """The built frontend (collectstatic into a temporary STATIC_ROOT, and the player's own
    sources) carries no provider key: no test key, no ``hg_live_`` or Systimz key pattern."""
    import re

    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", interactive=False, verbosity=0)
    pattern = re.compile(rb"hg_live_[A-Za-z0-9]{8,}|stz_[0-9a-f]{8}_[A-Za-z0-9_\-]{8,}")
    files = [
        p
        for root in (tmp_path / "static", BASE_DIR / "sessions" / "static")
        for p in root.rglob("*")
        if p.is_file()
    ]
    assert files, "nothing collected: the check would be void"
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data, path
        assert not pattern.search(data), path


def test_a_swapped_ciphertext_fails_and_the_api_answers_in_the_contract(
    tenant, make_tenant, heygen
):
    other = make_tenant("victim", plan=Plan.ENTERPRISE)
    ours = factories.ProviderCredentialFactory(
        organisation=tenant.org, provider="heygen", api_key=SECRET, plan=Plan.ENTERPRISE
    )
    theirs = factories.ProviderCredentialFactory(
        organisation=other.org, provider="heygen", api_key=OTHER_SECRET, plan=Plan.ENTERPRISE
    )
    # The attacker (or a botched restore) copies the victim's ciphertext into our row.
    ProviderCredential.objects.filter(pk=ours.pk).update(
        encrypted_api_key=theirs.encrypted_api_key, key_id=theirs.key_id
    )
    ours.refresh_from_db()
    with pytest.raises(crypto.DecryptionError):
        ours.reveal_api_key()
    assert theirs.reveal_api_key() == OTHER_SECRET  # the original still decrypts in place

    _heygen_avatar(tenant.org)
    calls_before = len(heygen.requests)
    response = tenant.client.post("/api/v1/sessions/", {"avatar": "anna"}, format="json")
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "conflict"
    # The session admitted for it was closed at once: its slot is free, nothing is live.
    assert not AvatarSession.objects.for_org(tenant.org).exclude(status="closed").exists()
    # The victim's key was never sent on our behalf.
    sent = heygen.requests[calls_before:]
    assert all(r["headers"].get("x-api-key") != OTHER_SECRET for r in sent)
    detail = tenant.client.get(f"/api/v1/provider-credentials/{ours.pk}/")
    assert detail.status_code == 200  # reading it needs no decryption: last4 is stored apart


def _rotation(settings: Any, rows: int, record_property: Any) -> None:
    org = factories.OrganisationFactory(slug=f"rot-{uuid.uuid4().hex[:6]}")
    old = settings.ENCRYPTION_KEYS[0]
    endpoints = []
    for n in range(rows):
        endpoint = LLMEndpoint(
            id=uuid.uuid4(),
            organisation=org,
            name=f"endpoint-{n}",
            base_url="https://llm.example/v1",
            model="m",
        )
        endpoint.set_api_key(f"sk-rot-{n:06d}")
        endpoints.append(endpoint)
    LLMEndpoint.objects.bulk_create(endpoints, batch_size=1000)
    old_id = crypto.key_id(old)
    assert LLMEndpoint.objects.filter(organisation=org, key_id=old_id).count() == rows

    new = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [new, old]
    started = time.monotonic()
    out = io.StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    record_property("rotation_rows", rows)
    record_property("rotation_seconds", round(time.monotonic() - started, 2))
    assert "failed=0" in out.getvalue()

    settings.ENCRYPTION_KEYS = [new]  # the old key is gone
    assert not LLMEndpoint.objects.filter(key_id=old_id).exists()
    decrypted = 0
    for endpoint in LLMEndpoint.objects.filter(organisation=org).iterator(chunk_size=2000):
        assert endpoint.reveal_api_key() == f"sk-rot-{int(endpoint.name.split('-')[1]):06d}"
        decrypted += 1
    assert decrypted == rows


def test_rotation_leaves_no_row_on_the_old_key(db, settings, record_property):
    _rotation(settings, int(os.environ.get("SYSTIMZ_ROTATION_ROWS", "1000")), record_property)


@pytest.mark.slow
def test_rotation_of_10k_rows(db, settings, record_property):
    _rotation(settings, int(os.environ.get("SYSTIMZ_ROTATION_ROWS_SLOW", "10000")), record_property)
