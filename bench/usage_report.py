"""The usage report (``sessions.usage.usage_report`` and ``GET /api/v1/usage/``) over a
1,000,000-row usage ledger on PostgreSQL, against a hand-written SQL aggregate in the same run.

    DATABASE_URL=postgres://... python -m bench.usage_report [--rows 1000000]
        [--other-rows 100000] [--repeats 11] [--seed 42] [--json]

PostgreSQL only (it fills the ledger with ``INSERT ... SELECT generate_series(...)``). It creates
its own throwaway test database ``test_<name>_bench_<pid>`` (as Django's test runner does) and
drops it at the end; the development database is never opened.

Data: one organisation with ``--rows`` ledger rows (0.5 % of them ``correction`` rows of an
earlier session, the rest one ``session`` row each) and a second organisation with
``--other-rows``, so the organisation filter has something to leave out. Sessions end uniformly
over the 395 days before today (UTC), last 20 s to an hour (billable minutes rounded up per
session, as the ledger does), on five avatars (skewed: the first has about a third of the
rows) and three qualities. Every ledger row has its ``AvatarSession`` (closed; the foreign key
is kept, nothing is relaxed), generated the same way from a staging table; both tables are
written in ``ended_at`` order, both organisations interleaved, as a ledger appended to at each
close is. Then ``ANALYZE``. Generation is deterministic (``setseed``).

Measured, for a month (30 days), a quarter (90) and a year (365) ending yesterday, and for each
``group_by`` (day, avatar, quality), ``--repeats`` times each after a warm-up, interleaved in
rotating order:

- ``orm``: ``usage_report(org=..., start=..., end=..., group_by=...)``;
- ``sql``: the same aggregate written by hand (``date_trunc('day', ended_at AT TIME ZONE
  'UTC')``, ``count(DISTINCT session_id) FILTER (WHERE kind = 'session')``, ``sum(...)``,
  ``GROUP BY 1``) through ``connection.cursor()``;
- ``sql count(*)``: the same with ``count(*) FILTER (WHERE kind = 'session')``, which the ledger's
  unique constraint (one ``session`` row per session) makes equal to the distinct count.

Every variant's numbers are compared with the ORM's, row by row. For the year by day, also
``GET /api/v1/usage/`` through DRF's ``APIClient`` (a real ``billing`` API key), as JSON and as
CSV, with their numbers checked against the ORM's. Finally ``EXPLAIN (ANALYZE, BUFFERS)`` of the
ORM's year queries (the SQL it actually ran, captured), of the hand-written one, of the ORM's
month by day, and of the ORM's year by day and by avatar with ``SET LOCAL work_mem = '64MB'``
(the default 4 MB makes the sorts spill to disk).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bench._common import bench_database, load_average, log, quiet
from bench.knowledge_ask import _bounded, engine_info, machine_info, summarise

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "systimz.settings")

SPAN_DAYS = 395  # ~13 months of ledger before today
RANGES = (("month", 30), ("quarter", 90), ("year", 365))
GROUPS = ("day", "avatar", "quality")
AVATARS = ("concierge", "support", "sales", "trainer", "kiosk")
OTHER_AVATARS = ("front-desk", "helper")
QUALITIES = ("low", "medium", "high")
CORRECTION_EVERY = 200  # one correction row per this many sessions
FIELDS = ("sessions", "session_seconds", "billable_minutes", "speaking_seconds", "tasks")


# --- Data -------------------------------------------------------------------------------------


def _stage(org: Any, slugs: tuple[str, ...], rows: int, prefix: str, anchor: datetime) -> int:
    """Stage ``rows`` ledger rows for ``org`` (sessions, plus a correction every
    ``CORRECTION_EVERY``) in ``bench_stage``; the number of sessions."""
    from django.db import connection

    from tests import factories

    avatars = [
        factories.AvatarFactory(
            organisation=org, slug=slug, provider="heygen", provider_avatar_id=f"{slug}_avatar"
        )
        for slug in slugs
    ]
    sessions = rows - rows // (CORRECTION_EVERY + 1)
    with connection.cursor() as cursor:
        # One row per session: its pseudo-random draws, made once so the session and its
        # ledger row agree. Avatars are skewed (power 1.6), qualities uniform.
        cursor.execute(
            """
            INSERT INTO bench_stage
            SELECT %(org)s::uuid, %(prefix)s, g,
                   md5(%(prefix)s || '-session-' || g)::uuid,
                   (%(avatar_ids)s::uuid[])[1 + a],
                   (%(avatar_slugs)s::text[])[1 + a],
                   (%(qualities)s::text[])[1 + q],
                   ended_at - make_interval(secs => seconds),
                   ended_at, seconds,
                   ceil(seconds / 60.0)::int,
                   floor(seconds * 0.6 * r_speak)::int,
                   floor(r_tasks * 25)::int,
                   (ARRAY['user', 'user', 'user', 'idle', 'timeout', 'disconnected', 'error'])
                       [1 + floor(r_reason * 7)::int],
                   'user-' || (g %% 5000)
            FROM (
                SELECT g,
                       floor(power(random(), 1.6) * %(n_avatars)s)::int AS a,
                       floor(random() * 3)::int AS q,
                       %(anchor)s::timestamptz
                           - make_interval(secs => random() * %(span)s) AS ended_at,
                       20 + floor(power(random(), 2) * 3580)::int AS seconds,
                       random() AS r_speak, random() AS r_tasks, random() AS r_reason
                FROM generate_series(1, %(sessions)s) AS g
            ) AS draws
            """,
            {
                "org": org.pk,
                "prefix": prefix,
                "avatar_ids": [str(a.pk) for a in avatars],
                "avatar_slugs": list(slugs),
                "qualities": list(QUALITIES),
                "n_avatars": len(slugs),
                "anchor": anchor,
                "span": SPAN_DAYS * 86400,
                "sessions": sessions,
            },
        )
    return sessions


def _insert_staged() -> None:
    """The staged sessions and their ledger rows, in ``ended_at`` order: the ledger is
    appended to as sessions close, so a month's rows sit together on disk, as in production."""
    from django.db import connection

    from sessions.models import AvatarSession, UsageRecord

    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {AvatarSession._meta.db_table} (
                id, organisation_id, created_at, avatar_id, avatar_slug, provider, quality,
                credential_id, provider_session_id, status, close_reason, failure, end_user,
                embed_origin, media, started_at, last_activity_at, expires_at, ended_at, version,
                next_seq, stop_pending, stop_attempts, next_stop_attempt_at, state_changed_at,
                idle_timeout_seconds, listeners, disconnected_at)
            SELECT session_id, org_id, started_at - interval '2 seconds', avatar_id,
                   avatar_slug, 'heygen', quality, NULL, 'bench-' || session_id, 'closed',
                   reason, '', end_user, '', '{{}}'::jsonb, started_at, ended_at,
                   started_at + interval '1 hour', ended_at, 4, 1, false, 0, NULL, ended_at,
                   120, 0, NULL
            FROM bench_stage ORDER BY ended_at
            """  # noqa: S608 - the table name from the model
        )
        cursor.execute(
            f"""
            INSERT INTO {UsageRecord._meta.db_table} (
                id, organisation_id, created_at, session_id, kind, avatar_id, avatar_slug,
                quality, provider, end_user, embed_origin, started_at, ended_at,
                session_seconds, billable_minutes, speaking_seconds, tasks, close_reason, note)
            SELECT * FROM (
                SELECT md5(prefix || '-usage-' || g)::uuid, org_id, ended_at, session_id,
                       'session', avatar_id, avatar_slug, quality, 'heygen', end_user, '',
                       started_at, ended_at, seconds, billable, speaking, tasks, reason, ''
                FROM bench_stage
                UNION ALL
                SELECT md5(prefix || '-correction-' || g)::uuid, org_id, ended_at, session_id,
                       'correction', avatar_id, avatar_slug, quality, 'heygen', end_user, '',
                       started_at, ended_at, 0, (g / %(every)s) %% 4 - 1, 0, 0, reason,
                       'bench correction'
                FROM bench_stage WHERE g %% %(every)s = 0
            ) AS ledger ORDER BY 13
            """,  # noqa: S608
            {"every": CORRECTION_EVERY},
        )


def fill(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from django.db import connection, transaction

    from sessions.models import AvatarSession, UsageRecord
    from systimz.orgs.models import Plan
    from systimz.orgs.services import organisation_create

    anchor = datetime.now(tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    org = organisation_create(slug="bench", name="Bench", plan=Plan.ENTERPRISE)
    other = organisation_create(slug="other", name="Other", plan=Plan.ENTERPRISE)
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [(args.seed % 1000) / 1000])
        cursor.execute(
            "CREATE TEMP TABLE bench_stage (org_id uuid, prefix text, g int, session_id uuid, "
            "avatar_id uuid, avatar_slug text, quality text, started_at timestamptz, "
            "ended_at timestamptz, seconds int, billable int, speaking int, tasks int, "
            "reason text, end_user text) ON COMMIT DROP"
        )
        sessions = _stage(org, AVATARS, args.rows, "bench", anchor)
        if args.other_rows:
            _stage(other, OTHER_AVATARS, args.other_rows, "other", anchor)
        log(f"staged in {time.perf_counter() - started:.1f} s; inserting")
        _insert_staged()
    fill_seconds = time.perf_counter() - started
    log(f"filled the ledger in {fill_seconds:.1f} s")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {AvatarSession._meta.db_table}")
        cursor.execute(f"ANALYZE {UsageRecord._meta.db_table}")
    analyze_seconds = time.perf_counter() - started
    counts = {
        "ledger_rows_org": UsageRecord.objects.filter(organisation=org).count(),
        "ledger_sessions_org": sessions,
        "ledger_corrections_org": UsageRecord.objects.filter(
            organisation=org, kind="correction"
        ).count(),
        "ledger_rows_other_org": UsageRecord.objects.filter(organisation=other).count(),
        "sessions_total": AvatarSession.objects.count(),
    }
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_size_pretty(pg_total_relation_size(%s)), "
            "pg_size_pretty(pg_relation_size(%s))",
            [UsageRecord._meta.db_table] * 2,
        )
        total_size, heap_size = cursor.fetchone()
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s ORDER BY 1",
            [UsageRecord._meta.db_table],
        )
        indexes = dict(cursor.fetchall())
    log(
        f"ledger ready: {counts}; fill {fill_seconds:.1f} s, ANALYZE {analyze_seconds:.1f} s, "
        f"table {total_size} with indexes ({heap_size} heap)"
    )
    return {
        "org": org,
        "anchor": anchor,
        "summary": {
            **counts,
            "fill_s": round(fill_seconds, 1),
            "analyze_s": round(analyze_seconds, 1),
            "usage_table_size": total_size,
            "usage_heap_size": heap_size,
            "usage_indexes": indexes,
        },
    }


# --- The variants -----------------------------------------------------------------------------


def _sql(group_by: str, count: str) -> str:
    from sessions.models import UsageRecord

    key = {
        "day": "(date_trunc('day', ended_at AT TIME ZONE 'UTC'))::date",
        "avatar": "avatar_slug",
        "quality": "quality",
    }[group_by]
    return f"""
        SELECT {key} AS key,
               {count} FILTER (WHERE kind = 'session') AS sessions,
               coalesce(sum(session_seconds), 0), coalesce(sum(billable_minutes), 0),
               coalesce(sum(speaking_seconds), 0), coalesce(sum(tasks), 0)
        FROM {UsageRecord._meta.db_table}
        WHERE organisation_id = %s AND ended_at >= %s AND ended_at < %s
        GROUP BY 1 ORDER BY 1
    """  # noqa: S608 - the table name from the model, values as parameters


def hand_written(
    org: Any, start: date, end: date, group_by: str, count: str
) -> list[dict[str, Any]]:
    from django.db import connection

    low = datetime.combine(start, datetime.min.time(), tzinfo=UTC)
    high = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    with connection.cursor() as cursor:
        cursor.execute(_sql(group_by, count), [org.pk, low, high])
        rows = cursor.fetchall()
    return [
        {
            group_by: key.isoformat() if isinstance(key, date) else key,
            **{f: int(v) for f, v in zip(FIELDS, values, strict=True)},
        }
        for key, *values in rows
    ]


def orm_rows(org: Any, start: date, end: date, group_by: str) -> list[dict[str, Any]]:
    from sessions.usage import usage_report

    return usage_report(org=org, start=start, end=end, group_by=group_by).rows  # type: ignore[arg-type]


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def measure(
    org: Any, anchor: datetime, repeats: int, log: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[str]]:
    end = (anchor - timedelta(days=1)).date()  # yesterday, the last full day
    results: list[dict[str, Any]] = []
    mismatches: list[str] = []
    for range_name, days in RANGES:
        start = end - timedelta(days=days - 1)
        for group_by in GROUPS:
            variants: dict[str, Callable[[], list[dict[str, Any]]]] = {
                "orm": lambda s=start, g=group_by: orm_rows(org, s, end, g),
                "sql": lambda s=start, g=group_by: hand_written(
                    org, s, end, g, "count(DISTINCT session_id)"
                ),
                "sql_count_star": lambda s=start, g=group_by: hand_written(
                    org, s, end, g, "count(*)"
                ),
            }
            reference = variants["orm"]()  # warm-up, and the numbers every variant must match
            for name, fn in variants.items():
                if name != "orm" and fn() != reference:
                    mismatches.append(f"{range_name}/{group_by}: {name} differs from the ORM")
            names = list(variants)
            times: dict[str, list[float]] = {name: [] for name in names}
            for i in range(repeats):
                order = names[i % len(names) :] + names[: i % len(names)]
                for name in order:
                    seconds, rows = _timed(variants[name])
                    times[name].append(seconds)
                    if rows != reference:
                        mismatches.append(f"{range_name}/{group_by}: {name} changed on repeat")
            summary = {name: summarise(t) for name, t in times.items()}
            results.append(
                {
                    "range": range_name,
                    "days": days,
                    "from": start.isoformat(),
                    "to": end.isoformat(),
                    "group_by": group_by,
                    "groups": len(reference),
                    "ledger_rows_in_range": None,
                    "totals": {f: sum(r[f] for r in reference) for f in FIELDS},
                    **summary,
                    "ratio_orm_to_sql_p50": round(
                        summary["orm"]["p50_ms"] / summary["sql"]["p50_ms"], 2
                    ),
                    "ratio_sql_to_count_star_p50": round(
                        summary["sql"]["p50_ms"] / summary["sql_count_star"]["p50_ms"], 2
                    ),
                }
            )
            log(
                f"  {range_name:>7} by {group_by:<7} {len(reference):>3} groups: orm p50 "
                f"{summary['orm']['p50_ms']:.0f} ms, sql {summary['sql']['p50_ms']:.0f} ms, "
                f"count(*) {summary['sql_count_star']['p50_ms']:.0f} ms"
            )
    return results, mismatches


def _rows_in_range(org: Any, results: list[dict[str, Any]]) -> None:
    from sessions.models import UsageRecord

    for r in results:
        if r["group_by"] != "day":
            continue
        low = datetime.fromisoformat(r["from"]).replace(tzinfo=UTC)
        high = datetime.fromisoformat(r["to"]).replace(tzinfo=UTC) + timedelta(days=1)
        n = UsageRecord.objects.filter(organisation=org, ended_at__gte=low, ended_at__lt=high)
        count = n.count()
        for same in results:
            if same["range"] == r["range"]:
                same["ledger_rows_in_range"] = count


def measure_api(org: Any, anchor: datetime, repeats: int, mismatches: list[str]) -> dict[str, Any]:
    from rest_framework.test import APIClient

    from systimz.orgs.services import api_key_create

    end = (anchor - timedelta(days=1)).date()
    start = end - timedelta(days=364)
    issued = api_key_create(org=org, name="bench-billing", scopes=["billing"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    query = {"from": start.isoformat(), "to": end.isoformat(), "group_by": "day"}
    reference = orm_rows(org, start, end, "day")

    def get_json() -> Any:
        response = client.get("/api/v1/usage/", query)
        assert response.status_code == 200, response.content[:300]
        return response.json()

    def get_csv() -> str:
        response = client.get("/api/v1/usage/", {**query, "format": "csv"})
        assert response.status_code == 200, response.content[:300]
        assert response["Content-Type"].startswith("text/csv"), response["Content-Type"]
        return response.content.decode()

    body = get_json()  # warm-up and checks
    if body["rows"] != reference:
        mismatches.append("API JSON rows differ from the ORM")
    text = get_csv()
    lines = list(csv.reader(io.StringIO(text)))
    csv_rows = [
        {"day": line[0], **{f: int(v) for f, v in zip(FIELDS, line[1:], strict=True)}}
        for line in lines[1:-1]
    ]
    if csv_rows != reference:
        mismatches.append("API CSV rows differ from the ORM")
    if [int(v) for v in lines[-1][1:]] != [body["totals"][f] for f in FIELDS]:
        mismatches.append("API CSV total line differs from the JSON totals")
    times: dict[str, list[float]] = {"api_json": [], "api_csv": [], "orm": []}
    calls: dict[str, Callable[[], Any]] = {
        "api_json": get_json,
        "api_csv": get_csv,
        "orm": lambda: orm_rows(org, start, end, "day"),
    }
    names = list(calls)
    for i in range(repeats):
        for name in names[i % 3 :] + names[: i % 3]:
            times[name].append(_timed(calls[name])[0])
    summary = {name: summarise(t) for name, t in times.items()}
    return {
        "query": query,
        "json_bytes": len(json.dumps(body)),
        "csv_bytes": len(text),
        **summary,
        "ratio_json_to_orm_p50": round(summary["api_json"]["p50_ms"] / summary["orm"]["p50_ms"], 2),
        "ratio_csv_to_orm_p50": round(summary["api_csv"]["p50_ms"] / summary["orm"]["p50_ms"], 2),
    }


# --- EXPLAIN ----------------------------------------------------------------------------------


def _plan_summary(plan: list[str]) -> dict[str, Any]:
    text = "\n".join(plan)
    return {
        "indexes_used": sorted(set(re.findall(r"(?:Index|Index Only) Scan using (\S+)", text))),
        "scans": [
            line.strip().removeprefix("->  ").split("  (")[0]
            for line in plan
            if "Scan" in line and "(" in line
        ],
        "sort_methods": sorted(set(re.findall(r"Sort Method: ([^\n]+?)(?:  |$)", text))),
        "workers_launched": re.findall(r"Workers Launched: (\d+)", text),
        "execution_ms": float(m.group(1))
        if (m := re.search(r"Execution Time: ([\d.]+) ms", text))
        else None,
        "top_buffers": next((line.strip() for line in plan if "Buffers:" in line), None),
    }


def _explain(sql: str, params: list[Any] | None = None, work_mem: str | None = None) -> list[str]:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        if work_mem:
            cursor.execute(f"SET LOCAL work_mem = '{work_mem}'")
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return [row[0] for row in cursor.fetchall()]


def _orm_sql(org: Any, start: date, end: date, group_by: str) -> str:
    """The SQL ``usage_report`` runs (captured, with its values inlined)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        orm_rows(org, start, end, group_by)
    return queries.captured_queries[-1]["sql"]


def explain_plans(org: Any, anchor: datetime) -> dict[str, Any]:
    from django.db import connection

    end = (anchor - timedelta(days=1)).date()
    year = end - timedelta(days=364)
    month = end - timedelta(days=29)
    out: dict[str, Any] = {}
    with connection.cursor() as cursor:
        for setting in ("work_mem", "shared_buffers", "max_parallel_workers_per_gather", "jit"):
            cursor.execute(f"SHOW {setting}")
            out[setting] = cursor.fetchone()[0]
    cases: dict[str, tuple[str, list[Any] | None, str | None]] = {}
    for group_by in GROUPS:
        cases[f"orm_year_{group_by}"] = (_orm_sql(org, year, end, group_by), None, None)
    low = datetime.combine(year, datetime.min.time(), tzinfo=UTC)
    high = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    cases["sql_year_day"] = (_sql("day", "count(DISTINCT session_id)"), [org.pk, low, high], None)
    cases["sql_year_day_count_star"] = (_sql("day", "count(*)"), [org.pk, low, high], None)
    cases["orm_month_day"] = (_orm_sql(org, month, end, "day"), None, None)
    for group_by in ("day", "avatar"):
        cases[f"orm_year_{group_by}_work_mem_64MB"] = (
            cases[f"orm_year_{group_by}"][0],
            None,
            "64MB",
        )
    for name, (sql, params, work_mem) in cases.items():
        plan = _explain(sql, params, work_mem)
        out[name] = {"sql": sql, "plan": plan, "summary": _plan_summary(plan)}
    return out


# --- Report -----------------------------------------------------------------------------------


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    load_before = load_average()
    data = fill(args, log)
    org, anchor = data["org"], data["anchor"]
    log(f"timing usage_report, {args.repeats} repeats per case after a warm-up")
    results, mismatches = measure(org, anchor, args.repeats, log)
    _rows_in_range(org, results)
    log("timing GET /api/v1/usage/ (year by day)")
    api = measure_api(org, anchor, args.repeats, mismatches)
    log("EXPLAIN (ANALYZE, BUFFERS)")
    explain = explain_plans(org, anchor)
    return {
        "benchmark": "usage_report",
        "database": engine_info(),
        "machine": {**machine_info(), "load_before": load_before, "load_after": load_average()},
        "seed": args.seed,
        "repeats": args.repeats,
        "data": data["summary"],
        "results": results,
        "api_year_by_day": api,
        "explain": explain,
        "mismatches": mismatches,
        "ok": not mismatches,
    }


def render(report: dict[str, Any]) -> str:
    db, machine, data = report["database"], report["machine"], report["data"]
    lines = [
        f"usage_report benchmark: {db['engine']} {db['version']}; {machine['cpus']} CPUs, "
        f"{machine['mem_gib']} GiB, Python {machine['python']}, Django {machine['django']}; "
        f"load {machine['load_before'][0]:.2f} before, {machine['load_after'][0]:.2f} after",
        f"ledger: {data['ledger_rows_org']:,} rows for the organisation "
        f"({data['ledger_corrections_org']:,} corrections), {data['ledger_rows_other_org']:,} "
        f"for another, {data['sessions_total']:,} sessions; filled in {data['fill_s']} s, "
        f"ANALYZE {data['analyze_s']} s; table {data['usage_table_size']} with indexes",
        f"{report['repeats']} repeats per case; ms p50 / p95",
        "",
        f"{'range':<8}{'group':<9}{'rows in':>9}{'groups':>7}{'orm':>17}{'sql':>17}"
        f"{'sql count(*)':>17}{'orm/sql':>9}{'sql/c(*)':>9}",
    ]
    for r in report["results"]:
        lines.append(
            f"{r['range']:<8}{r['group_by']:<9}{r['ledger_rows_in_range']:>9,}{r['groups']:>7}"
            + "".join(
                f"{r[v]['p50_ms']:>9.1f} /{r[v]['p95_ms']:>6.1f}"
                for v in ("orm", "sql", "sql_count_star")
            )
            + f"{r['ratio_orm_to_sql_p50']:>8.2f}x{r['ratio_sql_to_count_star_p50']:>8.2f}x"
        )
    api, explain = report["api_year_by_day"], report["explain"]
    lines += [
        "",
        f"GET /api/v1/usage/ year by day: JSON p50 {api['api_json']['p50_ms']:.1f} / p95 "
        f"{api['api_json']['p95_ms']:.1f} ms ({api['json_bytes']:,} bytes), CSV p50 "
        f"{api['api_csv']['p50_ms']:.1f} / p95 {api['api_csv']['p95_ms']:.1f} ms "
        f"({api['csv_bytes']:,} bytes); usage_report alone p50 {api['orm']['p50_ms']:.1f} ms; "
        f"JSON/ORM {api['ratio_json_to_orm_p50']}x, CSV/ORM {api['ratio_csv_to_orm_p50']}x",
        "",
        f"EXPLAIN (ANALYZE, BUFFERS) (work_mem {explain['work_mem']}, shared_buffers "
        f"{explain['shared_buffers']}, parallel workers per gather "
        f"{explain['max_parallel_workers_per_gather']}, jit {explain['jit']}); EXPLAIN ANALYZE "
        "times include its own instrumentation:",
    ]
    for name, case in explain.items():
        if not isinstance(case, dict):
            continue
        s = case["summary"]
        lines.append(
            f"  {name:<30} {s['execution_ms']} ms; scans: {'; '.join(s['scans'])}; sort: "
            f"{', '.join(s['sort_methods']) or '-'}; workers {s['workers_launched'] or '-'}; "
            f"{s['top_buffers']}"
        )
    lines.append("  plan of the ORM's year-by-day query:")
    lines += [f"    {line}" for line in explain["orm_year_day"]["plan"]]
    lines.append("")
    lines.append(
        "check: every variant and the API gave the ORM's numbers"
        if report["ok"]
        else "check FAILED: " + "; ".join(report["mismatches"])
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.usage_report", description=__doc__)
    parser.add_argument("--rows", type=_bounded(1000, 50_000_000), default=1_000_000)
    parser.add_argument("--other-rows", type=_bounded(0, 50_000_000), default=100_000)
    parser.add_argument("--repeats", type=_bounded(2, 1000), default=11)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the table"
    )
    args = parser.parse_args(argv)

    import django

    django.setup()
    from django.db import connections

    if connections["default"].vendor != "postgresql":
        log(
            "bench.usage_report needs PostgreSQL (it fills the ledger with generate_series): "
            "set DATABASE_URL=postgres://user@host:port/name"
        )
        return 2
    quiet("systimz", "django.request")
    with bench_database():
        report = run(args, log)
    if args.json:
        print(json.dumps(report, sort_keys=False, default=str))
    else:
        print(render(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
