"""Shared by the live-session reliability tests (T6-T9 of reliability §4.2): the app under a
real daphne against the HeyGen emulator, a tenant with a HeyGen avatar of its own, a reaper
tick and a reconcile run on a moved clock, a PostgreSQL trigger that refuses a session over
the organisation's limit, and a WebSocket client that can be killed without a close frame.

Each test gets its own emulator key, so the emulator's list (what reconciliation reads) holds
only that test's provider sessions even though the emulator and daphne live for a module.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import time_machine
from django.conf import settings
from django.db import connection, connections

from sessions.models import LIVE_STATUSES, AvatarSession
from sessions.tasks import reap_sessions, reconcile_one
from systimz.orgs import services as org_services
from systimz.orgs.models import Organisation, Plan, ProviderCredential, Scope
from tests import factories
from tests.e2e.servers import BASE_DIR, AppServer, database_url
from tests.emulators.heygen import HeyGenEmulator
from tests.workers import wait_for

AVATAR_ID = "Anna_public_3_20240108"
DAPHNE_APP_NAME = "systimz-reliability-live"
HTTP_TIMEOUT = 60.0  # a bound on one request on a loaded machine, not a measurement

needs_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="concurrent writers and triggers need PostgreSQL"
)


# --- the app and the provider --------------------------------------------------------------


@contextmanager
def live_app(heygen: HeyGenEmulator, log_dir: Path, **env: str) -> Iterator[AppServer]:
    """daphne on the test database, pointed at ``heygen``. Throttles are lifted: the tests
    send thousands of requests with one key, and the per-key rate is not what they test."""
    database = database_url(connections["default"].settings_dict)
    if connection.vendor == "postgresql":  # its backends are told apart by this name
        database += f"?application_name={DAPHNE_APP_NAME}"
    server = AppServer(
        database,
        log_path=log_dir / "daphne.log",
        extra_env={
            "HEYGEN_API_BASE": heygen.base_url,
            "API_RATE_LIMIT": "1000000/minute",
            **env,
        },
    ).start()
    try:
        yield server
    finally:
        server.stop()
        _wait_backends_gone()


def _wait_backends_gone(timeout: float = 15.0) -> None:
    """PostgreSQL ends a backend a moment after its client process exits; the test database
    cannot be dropped at the end of the run while daphne's last ones linger. (Its own
    connection: a module's teardown runs outside pytest-django's database access.)"""
    db = connections["default"].settings_dict
    if connection.vendor != "postgresql":
        return
    with psycopg.connect(
        dbname="postgres",
        host=db.get("HOST") or None,
        port=db.get("PORT") or None,
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        autocommit=True,
    ) as admin:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                [DAPHNE_APP_NAME],
            ).fetchone()
            if not row or not row[0]:
                return
            time.sleep(0.1)


@dataclass
class LiveTenant:
    """A trial organisation (3 sessions at once) with a HeyGen avatar on its own emulator key."""

    org: Organisation
    key: str
    credential: ProviderCredential
    heygen_key: str
    avatar_slug: str = "anna"

    def client(self, server: AppServer) -> httpx.Client:
        return httpx.Client(
            base_url=server.origin,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=HTTP_TIMEOUT,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )

    def start(self, client: httpx.Client) -> httpx.Response:
        return client.post("/api/v1/sessions/", json={"avatar": self.avatar_slug})


def live_tenant(heygen: HeyGenEmulator, slug: str = "live") -> LiveTenant:
    """Needs committed rows (``transactional_db``): daphne reads them from another process."""
    heygen_key = f"hg-live-{uuid.uuid4().hex}"
    heygen.keys[heygen_key] = "enterprise"  # only our own limit is under test
    org = factories.OrganisationFactory(slug=slug, plan=Plan.TRIAL)
    issued = org_services.api_key_create(org=org, name="all", scopes=Scope.values)
    credential = factories.ProviderCredentialFactory(
        organisation=org, provider="heygen", api_key=heygen_key, plan="enterprise"
    )
    factories.AvatarFactory(
        organisation=org, slug="anna", provider="heygen", provider_avatar_id=AVATAR_ID
    )
    return LiveTenant(org=org, key=issued.secret, credential=credential, heygen_key=heygen_key)


def provider_ids(heygen: HeyGenEmulator, key: str) -> list[str]:
    """Every session the emulator ever created for ``key``."""
    with heygen.lock:
        return [s.session_id for s in heygen.sessions.values() if s.api_key == key]


def calls_for(heygen: HeyGenEmulator, operation: str, provider_session_id: str) -> int:
    return sum(
        1
        for r in heygen.received(operation)
        if isinstance(r["json"], dict) and r["json"].get("session_id") == provider_session_id
    )


def live_without_provider_id(org: Organisation) -> int:
    """Rows that hold a slot but name no provider session after their start has returned."""
    return (
        AvatarSession.objects.for_org(org)
        .filter(status__in=LIVE_STATUSES, provider_session_id="")
        .count()
    )


def assert_error_envelope(response: httpx.Response, statuses: set[int], *secrets: str) -> str:
    """The contract's envelope and nothing else: no key, no stack trace. Returns the code."""
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    text = response.text
    for leak in (*secrets, "Traceback", 'File "', "httpx", "X-Api-Key"):
        assert leak not in text, (leak, text)
    return str(body["error"]["code"])


# --- the clock ---------------------------------------------------------------------------


def reaper_ticks(
    start: datetime, until: datetime, interval: float | None = None
) -> Iterator[datetime]:
    """The beat's ticks between ``start`` and ``until``: one every reaper interval."""
    step = timedelta(seconds=interval or settings.REAPER_INTERVAL_SECONDS)
    moment = start + step
    while moment <= until:
        yield moment
        moment += step


def reap_at(moment: datetime) -> dict[str, Any]:
    """One reaper tick at ``moment``: the tick runs here, and each claim is finished by the
    worker (``running_worker``) that takes ``sessions.finish_stop``, with the clock still
    there, before this returns."""
    with time_machine.travel(moment, tick=True):
        counts = reap_sessions.apply().get()
        wait_for(
            lambda: not AvatarSession.objects.filter(status="stopping").exists(),
            timeout=60,
            what="the tick's claims finished",
        )
    return counts


def reconcile_at(moment: datetime, credential: ProviderCredential) -> dict[str, int]:
    """One run of the reconcile task for ``credential`` at ``moment``."""
    with time_machine.travel(moment, tick=False):
        return reconcile_one.apply(args=[str(credential.pk)]).get()


def closed(session_id: str) -> AvatarSession | None:
    session = AvatarSession.objects.get(pk=session_id)
    return session if session.status == "closed" else None


def wait_closed(session_id: str, what: str) -> AvatarSession:
    return wait_for(lambda: closed(session_id), timeout=60, what=what)


# --- the live-limit guard (PostgreSQL) ----------------------------------------------------

assert AvatarSession._meta.db_table == "avatar_sessions_avatarsession"  # named in the SQL

GUARD_SQL = """
CREATE TABLE reliability_live_cap (
    organisation_id uuid PRIMARY KEY,
    max_live integer NOT NULL,
    peak integer NOT NULL DEFAULT 0,
    checks integer NOT NULL DEFAULT 0
);
CREATE FUNCTION reliability_live_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cap integer;
    live integer;
BEGIN
    SELECT max_live INTO cap FROM reliability_live_cap
        WHERE organisation_id = NEW.organisation_id;
    IF cap IS NULL THEN
        RETURN NEW;
    END IF;
    IF NEW.status = 'active' AND NEW.provider_session_id = '' THEN
        RAISE EXCEPTION 'reliability guard: session % is active without a provider session',
            NEW.id;
    END IF;
    IF NEW.status IN ('starting', 'active', 'stopping')
       AND (TG_OP = 'INSERT' OR OLD.status NOT IN ('starting', 'active', 'stopping')) THEN
        -- Serialise the check per organisation on a lock of its own, so it holds even if the
        -- application's lock did not: each count below sees every committed row.
        PERFORM pg_advisory_xact_lock(hashtext('reliability-live:' || NEW.organisation_id));
        SELECT count(*) INTO live FROM avatar_sessions_avatarsession
            WHERE organisation_id = NEW.organisation_id
              AND status IN ('starting', 'active', 'stopping') AND id <> NEW.id;
        IF live + 1 > cap THEN
            RAISE EXCEPTION 'reliability guard: organisation % would run % live sessions, limit %',
                NEW.organisation_id, live + 1, cap;
        END IF;
        UPDATE reliability_live_cap SET peak = greatest(peak, live + 1), checks = checks + 1
            WHERE organisation_id = NEW.organisation_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER reliability_live_guard BEFORE INSERT OR UPDATE ON avatar_sessions_avatarsession
    FOR EACH ROW EXECUTE FUNCTION reliability_live_guard();
"""

UNGUARD_SQL = """
DROP TRIGGER IF EXISTS reliability_live_guard ON avatar_sessions_avatarsession;
DROP FUNCTION IF EXISTS reliability_live_guard();
DROP TABLE IF EXISTS reliability_live_cap;
"""


@dataclass
class LiveGuard:
    org_id: uuid.UUID

    def stats(self) -> tuple[int, int]:
        """(the most live sessions the trigger ever let the organisation have, checks made)"""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT peak, checks FROM reliability_live_cap WHERE organisation_id = %s",
                [self.org_id],
            )
            peak, checks = cursor.fetchone()
        return int(peak), int(checks)


@contextmanager
def live_limit_guard(org: Organisation) -> Iterator[LiveGuard]:
    """A trigger that RAISES when an insert or update would give ``org`` more live sessions
    than its limit, or make a session active without a provider session id; so a violation
    fails the statement (and the request, as a 500), instead of being sampled afterwards."""
    with connection.cursor() as cursor:
        cursor.execute(UNGUARD_SQL)
        cursor.execute(GUARD_SQL)
        cursor.execute(
            "INSERT INTO reliability_live_cap (organisation_id, max_live) VALUES (%s, %s)",
            [org.pk, org.limits.concurrent_sessions],
        )
    try:
        yield LiveGuard(org.pk)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(UNGUARD_SQL)


# --- a WebSocket client to kill -------------------------------------------------------------

# A player on a plain socket (the venv has no WebSocket client library), run as its own
# process so that it can be killed with SIGKILL: the kernel then drops the connection with no
# close frame. It resumes, waits for the session to be active, sends keep-alives, says
# "ready" and then only reads, like an idle browser tab.
WS_CLIENT_SOURCE = r"""
import base64, json, os, socket, struct, sys

port, path, keep_alives = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sock = socket.create_connection(("127.0.0.1", port), timeout=60)
key = base64.b64encode(os.urandom(16)).decode()
sock.sendall((
    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = sock.recv(4096)
    if not chunk:
        sys.exit("closed during the handshake")
    buf += chunk
head, buf = buf.split(b"\r\n\r\n", 1)
if not head.startswith(b"HTTP/1.1 101"):
    sys.exit(head.decode(errors="replace"))

def send(message):
    payload = json.dumps(message).encode()
    mask = os.urandom(4)
    n = len(payload)
    header = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

def frames():
    global buf
    while True:
        while len(buf) >= 2:
            n, offset = buf[1] & 0x7F, 2
            if n == 126:
                n, offset = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                n, offset = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < offset + n:
                break
            opcode, payload, buf = buf[0] & 0x0F, buf[offset:offset + n], buf[offset + n:]
            if opcode == 0x8:
                sys.exit("closed by the server")
            if opcode == 0x1:
                yield json.loads(payload)
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit("connection lost")
        buf += chunk

send({"type": "resume", "after": 0})
for frame in frames():
    if frame.get("type") == "session_state" and frame.get("status") == "active":
        break
for _ in range(keep_alives):
    send({"type": "keep_alive"})
print("ready", flush=True)
for frame in frames():
    pass
"""


class KillableClient:
    """The WebSocket player above, in a subprocess."""

    def __init__(self, port: int, path: str, keep_alives: int = 2) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our code
            [sys.executable, "-c", WS_CLIENT_SOURCE, str(port), path, str(keep_alives)],
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        """Block until the client says it is ready (a line on its stdout). Bounded: the client
        exits on any failure, its socket's timeout included, and its stdout then ends."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.kill()
            stderr = self.process.stderr.read() if self.process.stderr else ""
            raise AssertionError(f"the WebSocket client failed: {line!r} {stderr}")

    def kill(self) -> int:
        """SIGKILL: no close frame, no goodbye; the kernel closes the socket."""
        self.process.kill()
        code = self.process.wait(timeout=30)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return code


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def record(record_property: Callable[[str, object], None], **figures: object) -> None:
    """Figures for the JUnit report (``record_property``), never printed."""
    for name, value in figures.items():
        record_property(name, json.dumps(value) if isinstance(value, dict | list) else value)
