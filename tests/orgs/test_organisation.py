from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from systimz.orgs.models import Plan


def test_trial_limits_are_the_contracts(tenant):
    body = tenant.client.get("/api/v1/organisation/").json()
    assert body == {
        "slug": "acme",
        "name": tenant.org.name,
        "plan": "trial",
        "limits": {
            "concurrent_sessions": 3,
            "session_seconds": 600,
            "idle_timeout_seconds": 120,
            "monthly_minutes": 300,
        },
        "current": {"active_sessions": 0, "minutes_this_month": 0},
    }


def test_enterprise_defaults_and_overrides(make_tenant):
    tenant = make_tenant("big", plan=Plan.ENTERPRISE)
    limits = tenant.client.get("/api/v1/organisation").json()["limits"]
    assert limits == {
        "concurrent_sessions": 100,
        "session_seconds": 3600,
        "idle_timeout_seconds": 120,
        "monthly_minutes": None,
    }
    tenant.org.concurrent_sessions_limit = 250
    tenant.org.idle_timeout_seconds_limit = 30
    tenant.org.monthly_minutes_limit = 5000
    tenant.org.full_clean()
    tenant.org.save()
    limits = tenant.client.get("/api/v1/organisation/").json()["limits"]
    assert limits == {
        "concurrent_sessions": 250,
        "session_seconds": 3600,
        "idle_timeout_seconds": 30,
        "monthly_minutes": 5000,
    }


@pytest.mark.parametrize("idle", [29, 3601])
def test_enterprise_idle_timeout_is_bounded(make_tenant, idle):
    org = make_tenant("big", plan=Plan.ENTERPRISE).org
    org.idle_timeout_seconds_limit = idle
    with pytest.raises(ValidationError) as info:
        org.full_clean()
    assert "idle_timeout_seconds_limit" in info.value.message_dict


def test_trial_limits_cannot_be_overridden(tenant):
    tenant.org.concurrent_sessions_limit = 50
    with pytest.raises(ValidationError) as info:
        tenant.org.full_clean()
    assert "concurrent_sessions_limit" in info.value.message_dict
