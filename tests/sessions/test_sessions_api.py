"""Sessions through the REST API against the HeyGen emulator over real HTTP."""

from __future__ import annotations

import logging

import pytest

from sessions.models import AvatarSession
from tests import factories
from tests.emulators.heygen import HeyGenEmulator

KEY = "hg-live-key-9a8b7c6d5e4f3a2b"


@pytest.fixture
def heygen(settings):
    emulator = HeyGenEmulator(keys={KEY: "trial"}).start()
    settings.HEYGEN_API_BASE = emulator.base_url
    yield emulator
    emulator.stop()


@pytest.fixture
def heygen_avatar(tenant, heygen):
    factories.ProviderCredentialFactory(organisation=tenant.org, provider="heygen", api_key=KEY)
    voice = factories.VoicePresetFactory(
        organisation=tenant.org, voice_id="v-9", rate=0.8, emotion="soothing"
    )
    return factories.AvatarFactory(
        organisation=tenant.org,
        slug="anna",
        provider="heygen",
        provider_avatar_id="Anna_public_3_20240108",
        voice_preset=voice,
        quality="low",
    )


def _start(tenant, **extra):
    return tenant.client.post("/api/v1/sessions/", {"avatar": "anna", **extra}, format="json")


def test_start_speak_interrupt_keep_alive_stop(tenant, heygen, heygen_avatar, caplog):
    caplog.set_level(logging.DEBUG)
    response = _start(tenant, quality="high", end_user="visitor-7")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["avatar"], body["provider"], body["quality"]) == (
        "active",
        "anna",
        "heygen",
        "high",
    )
    assert body["media"]["kind"] == "livekit"
    assert body["player"]["websocket_url"] == f"/ws/sessions/{body['id']}/"
    assert body["player"]["token"]
    sent = heygen.received("streaming.new")[0]["json"]
    assert sent["quality"] == "high"
    assert sent["voice"] == {"voice_id": "v-9", "rate": 0.8, "emotion": "Soothing"}
    assert len(heygen.received("streaming.start")) == 1

    url = f"/api/v1/sessions/{body['id']}"
    speak = tenant.client.post(
        f"{url}/speak", {"text": "Welcome to the shop.", "mode": "repeat"}, format="json"
    )
    assert speak.status_code == 202
    provider_session = AvatarSession.objects.get(pk=body["id"]).provider_session_id
    assert speak.json()["task_id"] == heygen.sessions[provider_session].tasks[0]["task_id"]
    assert heygen.received("streaming.task")[0]["json"]["text"] == "Welcome to the shop."
    assert tenant.client.post(f"{url}/interrupt").status_code == 200
    assert tenant.client.post(f"{url}/keep-alive/").status_code == 200
    assert tenant.client.get("/api/v1/sessions/", {"status": "active"}).json()["count"] == 1

    stopped = tenant.client.post(f"{url}/stop")
    assert stopped.status_code == 200
    assert (stopped.json()["status"], stopped.json()["close_reason"]) == ("closed", "user")
    assert tenant.client.post(f"{url}/stop").status_code == 200  # idempotent
    assert len(heygen.received("streaming.stop")) == 1
    assert heygen.active() == []

    detail = tenant.client.get(f"{url}/").json()
    assert [t["text"] for t in detail["transcript"]] == ["Welcome to the shop."]
    events = tenant.client.get(f"{url}/events/", {"after": 0}).json()
    # The contract's messages only, seq increasing (the task record stays server-side).
    assert [e["seq"] for e in events] == [1, 2, 4]
    assert [e["type"] for e in events] == ["session_state", "session_state", "session_state"]
    assert all(e["at"].endswith("Z") and e["session_id"] == body["id"] for e in events)
    assert events[-1]["reason"] == "user"
    assert KEY not in caplog.text


def test_actions_on_a_closed_session_are_409(tenant, heygen, heygen_avatar):
    session_id = _start(tenant).json()["id"]
    tenant.client.post(f"/api/v1/sessions/{session_id}/stop")
    for action, data in (("speak", {"text": "hi"}), ("interrupt", None), ("keep-alive", None)):
        response = tenant.client.post(
            f"/api/v1/sessions/{session_id}/{action}", data, format="json"
        )
        assert response.status_code == 409, action
        assert response.json()["error"]["code"] == "conflict"


def test_the_fourth_trial_start_is_429_and_reaches_no_provider(tenant, heygen, heygen_avatar):
    for _ in range(3):
        assert _start(tenant).status_code == 201
    refused = _start(tenant)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "concurrency_limit"
    assert refused["Retry-After"] == "60"
    assert len(heygen.received("streaming.new")) == 3


@pytest.mark.parametrize(
    ("kind", "options", "status", "code"),
    [
        ("status", {"status": 500}, 503, "provider_unavailable"),
        ("unauthorized", {}, 502, "provider_error"),
        ("malformed", {}, 502, "provider_error"),
    ],
)
def test_a_failed_create_leaves_no_live_row_and_holds_no_slot(
    tenant, heygen, heygen_avatar, kind, options, status, code
):
    heygen.fail_next("streaming.new", kind, **options)
    response = _start(tenant)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert KEY not in response.content.decode()
    session = AvatarSession.objects.get()
    assert (session.status, session.close_reason) == ("closed", "error")
    assert _start(tenant).status_code == 201


def test_a_start_that_fails_after_create_stops_the_provider_session(tenant, heygen, heygen_avatar):
    heygen.fail_next(
        "streaming.start", "status", status=400, body={"code": 10013, "message": "avatar not found"}
    )
    response = _start(tenant)
    assert response.status_code == 502
    assert heygen.active() == []  # created, then stopped
    assert len(heygen.received("streaming.stop")) == 1
    session = AvatarSession.objects.get()
    assert session.provider_session_id
    assert (session.status, session.stop_pending) == ("closed", False)


def test_a_start_that_times_out_after_create_stops_the_provider_session(
    tenant, heygen, heygen_avatar, settings
):
    settings.PROVIDER_READ_TIMEOUT_SECONDS = 0.3
    heygen.fail_next("streaming.start", "hang", seconds=3.0, times=3)  # every attempt times out
    response = _start(tenant)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "provider_unavailable"
    assert heygen.active() == []  # created, then stopped
    session = AvatarSession.objects.get()
    assert (session.status, session.close_reason, session.stop_pending) == (
        "closed",
        "error",
        False,
    )


def test_a_stop_that_keeps_failing_is_left_for_the_reaper(tenant, heygen, heygen_avatar, settings):
    session_id = _start(tenant).json()["id"]
    heygen.fail_next("streaming.stop", "status", status=500, times=10)
    response = tenant.client.post(f"/api/v1/sessions/{session_id}/stop")
    assert response.status_code == 200
    session = AvatarSession.objects.get(pk=session_id)
    assert (session.status, session.stop_pending) == ("closed", True)


def test_a_stop_that_fails_then_succeeds_lands_once(tenant, heygen, heygen_avatar):
    from sessions.lifecycle import session_retry_stop

    session_id = _start(tenant).json()["id"]
    heygen.fail_next(
        "streaming.stop", "status", status=503, times=10
    )  # beyond the client's retries
    assert tenant.client.post(f"/api/v1/sessions/{session_id}/stop").status_code == 200
    session = AvatarSession.objects.get(pk=session_id)
    assert (session.status, session.stop_pending) == ("closed", True)
    assert len(heygen.active()) == 1  # still running at the provider: not forgotten

    heygen.clear_faults()
    assert session_retry_stop(session=session) is True
    session.refresh_from_db()
    assert (session.status, session.stop_pending, session.close_reason) == ("closed", False, "user")
    assert heygen.active() == []
    stops_seen = len(heygen.received("streaming.stop"))
    assert session_retry_stop(session=session) is True  # landed: nothing more is sent
    assert len(heygen.received("streaming.stop")) == stops_seen
    closes = session.events.filter(type="session_state", payload__status="closed").count()
    assert closes == 1


def test_an_unknown_avatar_is_a_field_error(tenant):
    response = tenant.client.post("/api/v1/sessions/", {"avatar": "ghost"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"avatar": ["Not found."]}


def test_a_liveavatar_session_starts_and_stops(tenant, settings):
    from tests.emulators.liveavatar import LiveAvatarEmulator

    key = "la-live-key-1234567890abcdef"
    emulator = LiveAvatarEmulator(keys={key: "trial"}).start()
    settings.LIVEAVATAR_API_BASE = emulator.base_url
    try:
        factories.ProviderCredentialFactory(
            organisation=tenant.org, provider="liveavatar", api_key=key
        )
        avatar_id = next(iter(emulator.avatars))
        factories.AvatarFactory(
            organisation=tenant.org, slug="lia", provider="liveavatar", provider_avatar_id=avatar_id
        )
        started = tenant.client.post("/api/v1/sessions/", {"avatar": "lia"}, format="json")
        assert started.status_code == 201, started.content
        assert started.json()["media"]["kind"] == "livekit"
        assert len(emulator.active()) == 1
        speak = tenant.client.post(
            f"/api/v1/sessions/{started.json()['id']}/speak", {"text": "hi"}, format="json"
        )
        assert speak.status_code == 400
        assert "media room" in speak.json()["error"]["message"]
        stopped = tenant.client.post(f"/api/v1/sessions/{started.json()['id']}/stop")
        assert stopped.json()["status"] == "closed"
        assert emulator.active() == []
    finally:
        emulator.stop()


def test_chat_is_answered_from_the_knowledge_base_and_spoken_as_repeat(
    tenant, heygen, heygen_avatar
):
    from knowledge import services as knowledge_services
    from knowledge.models import UnansweredQuestion

    kb = factories.KnowledgeBaseFactory(organisation=tenant.org, fallback_text="Sorry, no idea.")
    text = knowledge_services.document_text_from_json(
        title="Hours",
        content="# Hours\n\nThe shop is open from 9 to 17 on weekdays.",
        fmt="markdown",
    )
    knowledge_services.document_create(knowledge_base=kb, text=text)
    heygen_avatar.knowledge_base = kb
    heygen_avatar.save()
    session_id = _start(tenant).json()["id"]
    url = f"/api/v1/sessions/{session_id}"

    assert (
        tenant.client.post(
            f"{url}/speak", {"text": "When is the shop open?", "mode": "chat"}, format="json"
        ).status_code
        == 202
    )
    tenant.client.post(
        f"{url}/speak", {"text": "Do you sell zebras?", "mode": "chat"}, format="json"
    )

    sent = [call["json"] for call in heygen.received("streaming.task")]
    assert [(b["task_type"], b["text"]) for b in sent] == [
        ("repeat", "The shop is open from 9 to 17 on weekdays."),
        ("repeat", "Sorry, no idea."),
    ]
    transcript = tenant.client.get(f"{url}/").json()["transcript"]
    assert [(t["who"], t["text"]) for t in transcript] == [
        ("user", "When is the shop open?"),
        ("avatar", "The shop is open from 9 to 17 on weekdays."),
        ("user", "Do you sell zebras?"),
        ("avatar", "Sorry, no idea."),
    ]
    assert transcript[1]["citations"][0]["title"] == "Hours"
    gap = UnansweredQuestion.objects.get()
    assert (str(gap.session_id), gap.source) == (session_id, "session")


def test_provider_side_chat_passes_through(tenant, heygen, heygen_avatar):
    heygen_avatar.chat_mode = "provider"
    heygen_avatar.provider_knowledge_id = "hg-kb-1"
    heygen_avatar.save()
    session_id = _start(tenant).json()["id"]
    assert heygen.received("streaming.new")[0]["json"]["knowledge_base_id"] == "hg-kb-1"
    tenant.client.post(
        f"/api/v1/sessions/{session_id}/speak", {"text": "Hi!", "mode": "chat"}, format="json"
    )
    assert heygen.received("streaming.task")[0]["json"]["task_type"] == "chat"


def test_chat_without_a_knowledge_base_is_refused(tenant, heygen, heygen_avatar):
    session_id = _start(tenant).json()["id"]
    response = tenant.client.post(
        f"/api/v1/sessions/{session_id}/speak", {"text": "Hi", "mode": "chat"}, format="json"
    )
    assert response.status_code == 400
    assert heygen.received("streaming.task") == []


def test_the_admin_stops_sessions_now(tenant, heygen, heygen_avatar):
    from django.test import Client

    from systimz.orgs import services

    services.member_create(org=tenant.org, username="ops", password="a-long-pass-phrase-9")
    admin = Client()
    admin.login(username="ops", password="a-long-pass-phrase-9")
    session_id = _start(tenant).json()["id"]
    tenant.client.post(
        f"/api/v1/sessions/{session_id}/speak", {"text": "Hello from the shop."}, format="json"
    )
    listing = admin.get("/admin/avatar_sessions/avatarsession/").content.decode()
    assert "0:0" in listing  # its duration so far
    detail = admin.get(f"/admin/avatar_sessions/avatarsession/{session_id}/change/")
    assert "Hello from the shop." in detail.content.decode()  # the transcript
    response = admin.post(
        "/admin/avatar_sessions/avatarsession/",
        {"action": "stop_now", "_selected_action": [session_id]},
        follow=True,
    )
    assert "Stopped 1 session(s)." in response.content.decode()
    assert AvatarSession.objects.get(pk=session_id).close_reason == "user"
    assert heygen.active() == []


def test_a_create_whose_answer_was_lost_is_stopped_by_reconciliation(tenant, heygen, heygen_avatar):
    from datetime import timedelta

    from sessions.providers import provider_for
    from sessions.reconcile import reconcile_credential

    heygen.fail_next("streaming.new", "lost")
    assert _start(tenant).status_code == 503
    assert len(heygen.active()) == 1  # created at the provider; we never heard back
    live = _start(tenant).json()["id"]  # a session we do know about
    credential = AvatarSession.objects.get(pk=live).credential

    report = reconcile_credential(
        credential, provider_for(AvatarSession.objects.get(pk=live)), grace=timedelta(0)
    )

    assert report.listed == 2
    assert len(report.stopped) == 1
    assert [s.session_id for s in heygen.active()] == [
        AvatarSession.objects.get(pk=live).provider_session_id
    ]


def test_a_provider_that_cannot_serve_holds_no_slot(tenant, monkeypatch):
    from avatars.providers import local_tts

    monkeypatch.setattr(local_tts, "is_available", lambda: False)  # speech engine not installed
    factories.AvatarFactory(organisation=tenant.org, slug="home")  # local
    for _ in range(4):
        response = tenant.client.post("/api/v1/sessions/", {"avatar": "home"}, format="json")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "provider_unavailable"
        assert "requirements-tts.txt" in response.json()["error"]["message"]
    assert not AvatarSession.objects.filter(status__in=["starting", "active", "stopping"]).exists()
    assert AvatarSession.objects.filter(status="closed", close_reason="error").count() == 4
