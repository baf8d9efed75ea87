from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from avatars.models import Avatar
from systimz.orgs.models import ApiKey, Organisation, User
from tests.conftest import bearer_client


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_create_org_prints_a_working_all_scope_key_alone_on_the_last_line():
    output = _run("create_org", "globex", "--name", "Globex Corp", "--plan", "enterprise")
    key = output.strip().splitlines()[-1]
    assert key.startswith("stz_")
    assert " " not in key
    org = Organisation.objects.get(slug="globex")
    assert (org.name, org.plan) == ("Globex Corp", "enterprise")
    assert ApiKey.objects.get(organisation=org).scopes == ["manage", "sessions", "billing"]
    body = bearer_client(key).get("/api/v1/organisation/").json()
    assert (body["slug"], body["plan"]) == ("globex", "enterprise")


@pytest.mark.django_db
def test_create_org_refuses_a_taken_or_bad_slug():
    _run("create_org", "globex", "--name", "Globex")
    with pytest.raises(CommandError, match="slug"):
        _run("create_org", "globex", "--name", "Again")
    with pytest.raises(CommandError, match="slug"):
        _run("create_org", "not a slug", "--name", "Bad")
    assert Organisation.objects.count() == 1
    with pytest.raises(CommandError):
        _run("create_org", "x", "--name", "X", "--plan", "gold")


@pytest.mark.django_db
def test_create_member_makes_a_staff_login_bound_to_the_organisation():
    _run("create_org", "globex", "--name", "Globex")
    output = _run("create_member", "globex", "gina", "--email", "gina@globex.example")
    user = User.objects.get(username="gina")
    assert (user.organisation.slug, user.is_staff, user.is_superuser) == ("globex", True, False)
    assert user.check_password(output.split("password: ")[1].strip())
    with pytest.raises(CommandError, match="taken"):
        _run("create_member", "globex", "gina")
    with pytest.raises(CommandError, match="No organisation"):
        _run("create_member", "nope", "gus")


@pytest.mark.django_db
def test_seed_demo_is_repeatable_and_keeps_one_live_demo_key():
    first = _run("seed_demo")
    second = _run("seed_demo", "--admin-password", "demo-admin-pass-123")
    org = Organisation.objects.get(slug="demo")
    avatar = Avatar.objects.get(organisation=org)
    assert (avatar.slug, avatar.provider, avatar.published) == ("guide", "local", True)
    assert "Talk page:         http://127.0.0.1:8000/talk/demo/guide/" in second
    keys = [
        line.split()[-1]
        for line in (first, second)
        for line in line.splitlines()
        if line.startswith("API key")
    ]
    assert bearer_client(keys[0]).get("/api/v1/avatars/").status_code == 401
    assert bearer_client(keys[1]).get("/api/v1/avatars/").status_code == 200
    assert User.objects.get(username="admin").check_password("demo-admin-pass-123")
