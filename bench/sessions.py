"""What Systimz adds to a session's start and speak calls, over the avatar provider's own time,
and how long the built-in local avatar takes from a ``speak`` to its first event.

    python -m bench.sessions [--rounds 100] [--speaks 3] [--profile] [--json]

It creates its own throwaway test database (as Django's test runner does: a temporary SQLite
file, or ``test_<name>_bench_<pid>`` on PostgreSQL) and drops it at the end; the development
database is never opened. Every call goes through the REST API in-process (DRF's ``APIClient``
with a real ``Bearer`` API key of an enterprise organisation), so authentication, throttling,
serialisation and every database write of the request are in the measurement.

1. **HeyGen** (``--rounds`` sessions): the HeyGen emulator (``tests/emulators/heygen.py``) runs
   over real HTTP on loopback in this process and ``HEYGEN_API_BASE`` points at it. Each round
   starts a session (``POST /api/v1/sessions/``: streaming.new + streaming.start at the
   emulator), speaks ``--speaks`` sentences in ``repeat`` mode (``POST .../speak``: one
   streaming.task each) and stops it (``POST .../stop``: one streaming.stop). For each call the
   emulator's own time is measured server-side, from the moment its handler has the request
   line (``parse_request``) to the moment it has written the answer (end of ``do_POST``),
   summed over the provider requests the call made. Systimz's overhead is the API call's wall
   time minus that; the ratio is wall time / emulator time. The client side is timed too:
   ``ProviderHttp.call`` (the provider round trip as Systimz sees it: httpx, loopback, JSON)
   and ``ProviderHttp.__init__`` (building the provider's HTTP client).
2. **Local avatar** (``--rounds`` speaks on one ``local`` session, sentences of 5-20 words):
   the time from just before ``POST .../speak`` until the speaker thread has recorded
   ``avatar_start_talking`` for the task (the engine's sink ``publish`` is wrapped to timestamp
   its return), and until the first ``avatar_talking_message``; also when the first audio chunk
   reached the sink (synthesis done). Once the first word is out the speech is interrupted
   (``POST .../interrupt``) and ``local_engine().wait_idle`` waits for the speaker to finish,
   so the run stays short; what is measured happens before the cut.

Baselines, timed in the same run: for the local avatar, the bare
``local_tts.synthesize_stream(text)`` time to its first chunk for the same sentence (interleaved
with the speaks), so the report can split the latency into synthesis and Systimz; for the
database, a primary-key lookup and opening a new connection (what each local speaker thread
does); for HTTP, one provider call on a reused client (``list_active``).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import logging
import math
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.knowledge_ask import _bounded, engine_info, machine_info, summarise

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "systimz.settings")

HEYGEN_KEY = "hg-bench-key-0f1e2d3c4b5a6978"
HEYGEN_AVATAR = "Anna_public_3_20240108"
WARMUP_ROUNDS = 3
WARMUP_LOCAL_SPEAKS = 2
# DRF's per-key throttle allows API_RATE_LIMIT (1200/minute by default): a fresh API key every
# this many calls keeps a long run from being throttled (issued between calls, not timed).
CALLS_PER_KEY = 500
WAIT_SECONDS = 60.0  # a bound for the speaker and the emulator, not a measurement
PROFILE_ROUNDS = 10

# Sentences an avatar might say, 5-20 words, some with a clause mark the streaming
# synthesiser may cut a long first sentence at.
SENTENCES = [
    "Welcome to the shop, how can I help you today?",
    "Our opening hours are nine to six on weekdays.",
    "The new espresso machine heats up in under thirty seconds.",
    "Please hold on while I look that up for you.",
    "Returns are free within thirty days, as long as you keep the receipt.",
    "Thank you for visiting, and have a lovely day.",
    "Your order has shipped and should arrive by Thursday afternoon.",
    "I can explain the warranty, the delivery options, or how to set up your device.",
    "The blue model is lighter, while the grey one has a longer battery life.",
    "Sorry, I did not catch that.",
    "To reset the controller, hold the power button for ten seconds until the light blinks.",
    "Most customers choose the medium plan, which includes support and two free upgrades.",
    "Let me check the stock in the nearest store.",
    "Yes, we deliver on Saturdays in the city centre and nearby towns, for a small extra fee.",
]
assert all(5 <= len(s.split()) <= 20 for s in SENTENCES), "sentences must have 5-20 words"


# --- Instruments ------------------------------------------------------------------------------


def _emulator_class() -> type:
    """``HeyGenEmulator`` whose handler records (path, received, answered) per request."""
    from tests.emulators.heygen import HeyGenEmulator

    class TimedHeyGenEmulator(HeyGenEmulator):
        def __init__(self, **kwargs: Any) -> None:
            # Set before the base class builds the server (which asks for the handler).
            self.timings: list[tuple[str, float, float]] = []
            super().__init__(**kwargs)

        def _handler(self) -> type:
            base = super()._handler()
            timings = self.timings

            class TimedHandler(base):  # type: ignore[misc, valid-type]
                _received = 0.0

                def parse_request(self) -> bool:
                    # The request line has been read: the request is at the emulator.
                    self._received = time.perf_counter()
                    return super().parse_request()

                def do_POST(self) -> None:
                    try:
                        super().do_POST()
                    finally:
                        timings.append((self.path, self._received, time.perf_counter()))

                def do_GET(self) -> None:
                    try:
                        super().do_GET()
                    finally:
                        timings.append((self.path, self._received, time.perf_counter()))

            return TimedHandler

    return TimedHeyGenEmulator


@dataclass
class ProviderClientTimes:
    """Client-side times of ``ProviderHttp``: each ``call`` (the round trip) and each
    ``__init__`` (building the httpx client), appended in call order."""

    calls: list[float] = field(default_factory=list)
    setups: list[float] = field(default_factory=list)


@contextmanager
def provider_client_timed() -> Iterator[ProviderClientTimes]:
    from avatars.providers.http import ProviderHttp

    times = ProviderClientTimes()
    original_init, original_call = ProviderHttp.__init__, ProviderHttp.call

    @functools.wraps(original_init)
    def init(self: ProviderHttp, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            original_init(self, *args, **kwargs)
        finally:
            times.setups.append(time.perf_counter() - started)

    @functools.wraps(original_call)
    def call(self: ProviderHttp, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original_call(self, *args, **kwargs)
        finally:
            times.calls.append(time.perf_counter() - started)

    ProviderHttp.__init__ = init  # type: ignore[method-assign]
    ProviderHttp.call = call  # type: ignore[method-assign]
    try:
        yield times
    finally:
        ProviderHttp.__init__ = original_init  # type: ignore[method-assign]
        ProviderHttp.call = original_call  # type: ignore[method-assign]


class SinkTimes:
    """Wraps the local engine's sink: when each avatar event of a task was handed to
    ``publish`` and when it had been recorded, and when each audio chunk reached the sink."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.events: dict[tuple[str, str], tuple[float, float]] = {}  # first of each type
        self.audio: dict[tuple[str, int], tuple[float, float]] = {}

    @contextmanager
    def installed(self, sink: Any) -> Iterator[SinkTimes]:
        publish, put_audio = sink.publish, sink.put_audio

        def timed_publish(session_id: str, type_: str, payload: dict[str, Any]) -> bool:
            entered = time.perf_counter()
            recorded = publish(session_id, type_, payload)
            with self.cond:
                self.events.setdefault(
                    (str(payload.get("task_id")), type_), (entered, time.perf_counter())
                )
                self.cond.notify_all()
            return recorded

        def timed_put_audio(session_id: str, task_id: str, chunk: Any) -> None:
            entered = time.perf_counter()
            put_audio(session_id, task_id, chunk)
            with self.cond:
                self.audio.setdefault((task_id, chunk.index), (entered, time.perf_counter()))

        sink.publish, sink.put_audio = timed_publish, timed_put_audio
        try:
            yield self
        finally:
            del sink.publish, sink.put_audio  # the class's methods show through again

    def wait_event(self, task_id: str, type_: str, timeout: float) -> tuple[float, float]:
        with self.cond:
            if not self.cond.wait_for(lambda: (task_id, type_) in self.events, timeout):
                raise RuntimeError(f"no {type_} for task {task_id} within {timeout} s")
            return self.events[(task_id, type_)]


class Api:
    """Authenticated ``APIClient``s of one organisation, a fresh key every ``CALLS_PER_KEY``."""

    def __init__(self, org: Any) -> None:
        self.org = org
        self.calls = 0
        self.keys = 0
        self._client = self._new_client()

    def _new_client(self) -> Any:
        from rest_framework.test import APIClient

        from systimz.orgs.models import Scope
        from systimz.orgs.services import api_key_create

        self.keys += 1
        issued = api_key_create(org=self.org, name=f"bench-{self.keys}", scopes=Scope.values)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
        return client

    def client(self) -> Any:
        """The client for the next call (call this before starting a timer)."""
        self.calls += 1
        if self.calls % CALLS_PER_KEY == 0:
            self._client = self._new_client()
        return self._client


def _ok(response: Any, status: int, what: str) -> dict[str, Any]:
    if response.status_code != status:
        raise RuntimeError(f"{what}: HTTP {response.status_code} {response.content[:300]!r}")
    return response.json()


def ratio_summary(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)
    if len(ordered) == 1:
        p50 = p95 = ordered[0]
    else:
        cuts = statistics.quantiles(ordered, n=100, method="inclusive")
        p50, p95 = cuts[49], cuts[94]
    return {
        "n": len(ordered),
        "p50": round(p50, 2),
        "p95": round(p95, 2),
        "mean": round(statistics.fmean(ordered), 2),
        "min": round(ordered[0], 2),
        "max": round(ordered[-1], 2),
    }


# --- HeyGen: start, speak, stop --------------------------------------------------------------


@dataclass
class CallSamples:
    """Per API call, in seconds: wall time, the emulator's own time, the client-side provider
    round trips and provider client construction."""

    paths: tuple[str, ...]  # the provider requests the call makes
    total: list[float] = field(default_factory=list)
    emulator: list[float] = field(default_factory=list)
    round_trip: list[float] = field(default_factory=list)
    setup: list[float] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        overhead = [t - e for t, e in zip(self.total, self.emulator, strict=True)]
        outside = [
            t - r - s for t, r, s in zip(self.total, self.round_trip, self.setup, strict=True)
        ]
        return {
            "provider_requests": len(self.paths),
            "total": summarise(self.total),
            "emulator": summarise(self.emulator),
            "provider_round_trip": summarise(self.round_trip),
            "provider_client_setup": summarise(self.setup),
            "systimz_overhead": summarise(overhead),
            "outside_provider_client": summarise(outside),
            "ratio_total_to_emulator": ratio_summary(
                [t / e for t, e in zip(self.total, self.emulator, strict=True)]
            ),
        }


class HeyGenRun:
    def __init__(self, api: Api, emulator: Any, client_times: ProviderClientTimes) -> None:
        self.api = api
        self.emulator = emulator
        self.client_times = client_times
        self.samples = {
            "start": CallSamples(("/v1/streaming.new", "/v1/streaming.start")),
            "speak": CallSamples(("/v1/streaming.task",)),
            "stop": CallSamples(("/v1/streaming.stop",)),
        }

    def _measured(self, name: str, fn: Callable[[Any], Any], record: bool) -> Any:
        client = self.api.client()
        timings, times = self.emulator.timings, self.client_times
        marks = len(timings), len(times.calls), len(times.setups)
        started = time.perf_counter()
        response = fn(client)
        total = time.perf_counter() - started
        samples = self.samples[name]
        # The emulator's thread appends its timing after writing the answer: wait for it. Only
        # this call's requests count (a baseline's list request may land late in the window).
        deadline = time.monotonic() + WAIT_SECONDS
        while len(mine := [t for t in timings[marks[0] :] if t[0] in samples.paths]) < len(
            samples.paths
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: the emulator recorded {len(mine)} requests")
            time.sleep(0.0005)
        if record:
            samples.total.append(total)
            samples.emulator.append(sum(end - got for _, got, end in mine))
            samples.round_trip.append(sum(times.calls[marks[1] :]))
            samples.setup.append(sum(times.setups[marks[2] :]))
        return response

    def round(self, slug: str, sentences: list[str], *, record: bool = True) -> None:
        started = self._measured(
            "start",
            lambda c: c.post("/api/v1/sessions/", {"avatar": slug}, format="json"),
            record,
        )
        session_id = _ok(started, 201, "start")["id"]
        url = f"/api/v1/sessions/{session_id}"
        for text in sentences:
            spoken = self._measured(
                "speak",
                lambda c, text=text: c.post(
                    f"{url}/speak", {"text": text, "mode": "repeat"}, format="json"
                ),
                record,
            )
            _ok(spoken, 202, "speak")
        stopped = self._measured("stop", lambda c: c.post(f"{url}/stop"), record)
        assert _ok(stopped, 200, "stop")["status"] == "closed"


# --- Local avatar: speak to first event -------------------------------------------------------


def first_chunk_seconds(text: str, rate: float, emotion: str | None) -> float:
    """The bare synthesiser: ``synthesize_stream`` until its first chunk exists."""
    from avatars.providers import local_tts

    started = time.perf_counter()
    stream = local_tts.synthesize_stream(text, rate=rate, emotion=emotion)
    next(iter(stream))
    seconds = time.perf_counter() - started
    stream.close()  # synthesises nothing more
    return seconds


def local_speak(
    api: Api, session: dict[str, Any], psid: str, text: str, sink_times: SinkTimes
) -> dict[str, float]:
    """One speak on the local session; seconds from just before the POST to each milestone."""
    from sessions.local_media import local_engine

    client = api.client()
    started = time.perf_counter()
    response = client.post(
        f"/api/v1/sessions/{session['id']}/speak", {"text": text, "mode": "repeat"}, format="json"
    )
    answered = time.perf_counter()
    task_id = _ok(response, 202, "local speak")["task_id"]
    start_in, start_out = sink_times.wait_event(task_id, "avatar_start_talking", WAIT_SECONDS)
    _, word_out = sink_times.wait_event(task_id, "avatar_talking_message", WAIT_SECONDS)
    with sink_times.cond:
        chunk_in, chunk_out = sink_times.audio[(task_id, 0)]
    # The speech after the first word is not measured: cut it, and wait for the speaker to
    # finish (its producer completes the sentence it is synthesising).
    _ok(api.client().post(f"/api/v1/sessions/{session['id']}/interrupt"), 200, "interrupt")
    if not local_engine().wait_idle(psid, WAIT_SECONDS):
        raise RuntimeError("the local speaker did not finish")
    return {
        "api": answered - started,
        "first_chunk": chunk_in - started,
        "first_chunk_stored": chunk_out - started,
        "start_talking": start_out - started,
        "first_word": word_out - started,
        "after_synthesis": start_out - chunk_in,
        "publish_start_talking": start_out - start_in,
    }


def run_local(
    api: Api, org: Any, rounds: int, log: Callable[[str], None], baseline: Callable[[], None]
) -> dict[str, Any]:
    from avatars.providers import local_tts
    from sessions.local_media import local_engine
    from sessions.models import AvatarSession
    from tests.factories import AvatarFactory

    if not local_tts.is_available():
        log("local avatar skipped: requirements-tts.txt is not installed")
        return {"skipped": "requirements-tts.txt is not installed"}
    load_started = time.perf_counter()
    voice = local_tts.load_voice()
    voice_load = time.perf_counter() - load_started
    AvatarFactory(organisation=org, slug="bench-local", provider="local")
    session = _ok(
        api.client().post("/api/v1/sessions/", {"avatar": "bench-local"}, format="json"),
        201,
        "local start",
    )
    psid = AvatarSession.objects.get(pk=session["id"]).provider_session_id
    rate = float(session["media"].get("rate", 1.0))
    emotion = session["media"].get("emotion")
    log(f"local voice {voice.name} loaded in {voice_load:.1f} s; speaking {rounds} sentences")

    milestones: dict[str, list[float]] = {}
    synth: list[float] = []
    share: list[float] = []
    sink_times = SinkTimes()
    with sink_times.installed(local_engine().sink):
        for i in range(WARMUP_LOCAL_SPEAKS):
            text = SENTENCES[-1 - i]
            first_chunk_seconds(text, rate, emotion)
            local_speak(api, session, psid, text, sink_times)
        for i in range(rounds):
            text = SENTENCES[i % len(SENTENCES)]
            baseline()
            bare = first_chunk_seconds(text, rate, emotion)
            result = local_speak(api, session, psid, text, sink_times)
            synth.append(bare)
            share.append(result["start_talking"] - bare)
            for name, seconds in result.items():
                milestones.setdefault(name, []).append(seconds)
            if (i + 1) % 10 == 0:
                log(f"  local speaks {i + 1}/{rounds}")
    _ok(api.client().post(f"/api/v1/sessions/{session['id']}/stop"), 200, "local stop")
    report: dict[str, Any] = {name: summarise(times) for name, times in milestones.items()}
    report["baseline_first_chunk"] = summarise(synth)
    report["systimz_share"] = summarise(share)
    start_p50, synth_p50 = (
        report["start_talking"]["p50_ms"],
        report["baseline_first_chunk"]["p50_ms"],
    )
    report["ratio_start_talking_p50_to_synthesis_p50"] = (
        round(start_p50 / synth_p50, 2) if synth_p50 else None
    )
    words = [len(s.split()) for s in SENTENCES]
    report["setup"] = {
        "voice": voice.name,
        "voice_load_s": round(voice_load, 2),
        "rate": rate,
        "emotion": emotion,
        "sentences": len(SENTENCES),
        "words_min": min(words),
        "words_max": max(words),
    }
    return report


# --- The run -----------------------------------------------------------------------------------


def _profile(run: HeyGenRun, slug: str, speaks: int, log: Callable[[str], None]) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(PROFILE_ROUNDS):
        run.round(slug, _sentences(i, speaks), record=False)
    profiler.disable()
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(30)
        log(
            f"--- cProfile of {PROFILE_ROUNDS} HeyGen rounds "
            f"(start + {speaks} speaks + stop), by {order} ---\n{out.getvalue()}"
        )


def _sentences(round_index: int, speaks: int) -> list[str]:
    return [SENTENCES[(round_index * speaks + k) % len(SENTENCES)] for k in range(speaks)]


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from django.conf import settings
    from django.db import connections

    from avatars.providers.heygen import HeyGenInteractive
    from systimz.orgs.models import Organisation, Plan
    from systimz.orgs.services import organisation_create
    from tests import factories

    load_before = os.getloadavg()
    org = organisation_create(slug="bench", name="Bench", plan=Plan.ENTERPRISE)
    api = Api(org)
    factories.ProviderCredentialFactory(
        organisation=org, provider="heygen", api_key=HEYGEN_KEY, plan=Plan.ENTERPRISE
    )
    voice = factories.VoicePresetFactory(
        organisation=org, voice_id="v-9", rate=1.0, emotion="friendly"
    )
    factories.AvatarFactory(
        organisation=org,
        slug="anna",
        provider="heygen",
        provider_avatar_id=HEYGEN_AVATAR,
        voice_preset=voice,
        quality="low",
    )

    emulator = _emulator_class()(keys={HEYGEN_KEY: "enterprise"}).start()
    old_base = settings.HEYGEN_API_BASE
    settings.HEYGEN_API_BASE = emulator.base_url
    reused = HeyGenInteractive(api_key=HEYGEN_KEY, base_url=emulator.base_url)

    def new_connection() -> None:
        connection = connections.create_connection("default")
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            connection.close()

    baselines: dict[str, Callable[[], object]] = {
        "point lookup": lambda: Organisation.objects.filter(pk=org.pk).exists(),
        "new db connection": new_connection,
        "provider call, reused client": reused.list_active,
    }
    base_times: dict[str, list[float]] = {name: [] for name in baselines}

    def baseline() -> None:
        for name, fn in baselines.items():
            started = time.perf_counter()
            fn()
            base_times[name].append(time.perf_counter() - started)

    try:
        with provider_client_timed() as client_times:
            heygen = HeyGenRun(api, emulator, client_times)
            for i in range(WARMUP_ROUNDS):  # imports, query compilation, connections; untimed
                heygen.round("anna", _sentences(i, args.speaks), record=False)
                for fn in baselines.values():
                    fn()
            started = time.perf_counter()
            for i in range(args.rounds):
                baseline()
                heygen.round("anna", _sentences(i, args.speaks))
                if (i + 1) % 10 == 0:
                    log(f"  heygen rounds {i + 1}/{args.rounds}")
            heygen_seconds = time.perf_counter() - started
            log(f"heygen: {args.rounds} rounds in {heygen_seconds:.1f} s")
            if args.profile:
                _profile(heygen, "anna", args.speaks, log)
            leaked = emulator.active(HEYGEN_KEY)
            assert not leaked, f"{len(leaked)} emulator sessions left running"
        started = time.perf_counter()
        local = run_local(api, org, args.rounds, log, baseline)
        log(f"local: {args.rounds} speaks in {time.perf_counter() - started:.1f} s")
    finally:
        reused.close()
        settings.HEYGEN_API_BASE = old_base
        emulator.stop()

    heygen_report = {name: s.report() for name, s in heygen.samples.items()}
    return {
        "benchmark": "sessions",
        "database": engine_info(),
        "machine": {
            **machine_info(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
        },
        "rounds": args.rounds,
        "speaks_per_session": args.speaks,
        "api_keys_used": api.keys,
        "heygen": heygen_report,
        "local": local,
        "baseline": {name: summarise(times) for name, times in base_times.items() if times},
    }


def render(report: dict[str, Any]) -> str:
    db, machine = report["database"], report["machine"]
    heygen, local, base = report["heygen"], report["local"], report["baseline"]
    rounds, speaks = report["rounds"], report["speaks_per_session"]
    lines = [
        f"sessions benchmark: {db['engine']} {db['version']}, {rounds} HeyGen sessions "
        f"(start + {speaks} speaks + stop each), {rounds} local speaks",
        f"machine: {machine['cpus']} CPUs, {machine['mem_gib']} GiB RAM, "
        f"Python {machine['python']}, Django {machine['django']}, load average "
        f"{machine['load_before'][0]:.2f} before, {machine['load_after'][0]:.2f} after",
        "",
        f"{'HeyGen emulator, per API call (ms)':<44}{'n':>5}{'p50':>9}{'p95':>9}"
        f"{'mean':>9}{'max':>9}",
    ]

    def row(label: str, s: dict[str, Any]) -> str:
        return (
            f"{label:<44}{s['n']:>5}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}"
            f"{s['mean_ms']:>9.2f}{s['max_ms']:>9.2f}"
        )

    def ratio_row(label: str, s: dict[str, Any]) -> str:
        return (
            f"{label:<44}{s['n']:>5}{s['p50']:>8.1f}x{s['p95']:>8.1f}x"
            f"{s['mean']:>8.1f}x{s['max']:>8.1f}x"
        )

    for name, call in heygen.items():
        requests = call["provider_requests"]
        lines += [
            row(f"{name}: total (API call)", call["total"]),
            row(
                f"  emulator ({requests} request{'s' * (requests > 1)}, server-side)",
                call["emulator"],
            ),
            row("  provider round trip (client-side)", call["provider_round_trip"]),
            row("  provider client setup", call["provider_client_setup"]),
            row("  outside the provider client", call["outside_provider_client"]),
            row("  Systimz overhead (total - emulator)", call["systimz_overhead"]),
            ratio_row("  ratio total / emulator", call["ratio_total_to_emulator"]),
        ]
    if "skipped" in local:
        lines += ["", f"local avatar: skipped ({local['skipped']})"]
    else:
        setup = local["setup"]
        lines += [
            "",
            f"{'local avatar, ms from POST speak':<44}{'n':>5}{'p50':>9}{'p95':>9}"
            f"{'mean':>9}{'max':>9}",
            row("speak API call answered (202)", local["api"]),
            row("first audio chunk synthesised", local["first_chunk"]),
            row("first audio chunk stored", local["first_chunk_stored"]),
            row("avatar_start_talking recorded", local["start_talking"]),
            row("first avatar_talking_message recorded", local["first_word"]),
            row("  after synthesis (start_talking - chunk)", local["after_synthesis"]),
            row("  publish(avatar_start_talking) itself", local["publish_start_talking"]),
            row("baseline: synthesize_stream first chunk", local["baseline_first_chunk"]),
            row("Systimz share (start_talking - baseline)", local["systimz_share"]),
            f"voice {setup['voice']} (loaded in {setup['voice_load_s']:.1f} s), rate "
            f"{setup['rate']}, emotion {setup['emotion']}, {setup['sentences']} sentences of "
            f"{setup['words_min']}-{setup['words_max']} words",
        ]
    lines += ["", f"{'baselines (ms)':<44}{'n':>5}{'p50':>9}{'p95':>9}{'mean':>9}{'max':>9}"]
    lines += [row(name, s) for name, s in base.items()]
    summary = [
        f"{name}: Systimz adds {call['systimz_overhead']['p50_ms']:.1f} ms p50 "
        f"({call['ratio_total_to_emulator']['p50']:.1f}x the emulator's time)"
        for name, call in heygen.items()
    ]
    lines += ["", "; ".join(summary)]
    if "skipped" not in local:
        lines.append(
            f"local: avatar_start_talking p50 {local['start_talking']['p50_ms']:.0f} ms = "
            f"{local['ratio_start_talking_p50_to_synthesis_p50']}x the bare synthesis "
            f"({local['baseline_first_chunk']['p50_ms']:.0f} ms); Systimz share p50 "
            f"{local['systimz_share']['p50_ms']:.0f} ms"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sessions", description=__doc__)
    parser.add_argument(
        "--rounds",
        type=_bounded(1, 2000),
        default=100,
        help="HeyGen sessions (start, speaks, stop) and local speaks measured (default 100)",
    )
    parser.add_argument(
        "--speaks", type=_bounded(1, 50), default=3, help="speaks per HeyGen session (default 3)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"cProfile {PROFILE_ROUNDS} extra HeyGen rounds; the statistics go to stderr",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the table"
    )
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    import django

    django.setup()
    from django.db import connections
    from django.test.utils import (
        setup_databases,
        setup_test_environment,
        teardown_databases,
        teardown_test_environment,
    )

    # Per-call INFO lines (Systimz's and httpx's) would drown the output; warnings still show.
    for name in ("systimz", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)

    # A private test database name, so neither the development database nor a test database
    # of a concurrent pytest run is touched (Django would clobber an existing test_<name>).
    settings_dict = connections["default"].settings_dict
    tmpdir = None
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        tmpdir = tempfile.mkdtemp(prefix="systimz-bench-")
        settings_dict["TEST"]["NAME"] = os.path.join(tmpdir, "bench.sqlite3")
    else:
        settings_dict["TEST"]["NAME"] = f"test_{settings_dict['NAME']}_bench_{os.getpid()}"

    setup_test_environment(debug=False)
    started = time.perf_counter()
    old_config = setup_databases(
        verbosity=0, interactive=False, aliases={"default"}, serialized_aliases=set()
    )
    log(
        f"test database {connections['default'].settings_dict['NAME']} ready "
        f"in {time.perf_counter() - started:.1f} s"
    )
    try:
        report = run(args, log)
    finally:
        # The local speakers' threads have closed their connections (wait_idle), so the
        # test database can be dropped.
        teardown_databases(old_config, verbosity=0)
        teardown_test_environment()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)

    if args.json:
        print(json.dumps(report, sort_keys=False))
    else:
        print(render(report))
    return 0 if math.isfinite(report["heygen"]["start"]["total"]["p50_ms"]) else 1


if __name__ == "__main__":
    sys.exit(main())
