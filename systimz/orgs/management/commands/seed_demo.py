from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from avatars.models import Avatar, Provider, VoicePreset
from knowledge.models import KnowledgeBase
from systimz.orgs import services
from systimz.orgs.models import ApiKey, Organisation, Plan, Scope, User

DEMO_KEY_NAME = "demo (make run)"


class Command(BaseCommand):
    help = (
        "Create (or refresh) the demo organisation with a published local avatar, issue a "
        "fresh demo API key (revoking the previous one), and print the key and the talk page."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--admin-password", default=None, help="Default: generated.")

    @transaction.atomic
    def handle(self, *args: Any, base_url: str, admin_password: str | None, **options: Any) -> None:
        org = Organisation.objects.filter(slug="demo").first() or services.organisation_create(
            slug="demo", name="Systimz Demo", plan=Plan.TRIAL
        )
        voice, _ = VoicePreset.objects.get_or_create(
            organisation=org,
            name="Warm",
            defaults={"voice_id": "en-us", "rate": 1.0, "emotion": "friendly"},
        )
        kb, _ = KnowledgeBase.objects.get_or_create(
            organisation=org,
            name="About Systimz",
            defaults={
                "instructions": "Answer briefly and kindly.",
                "opening_text": "Hello! I am the Systimz guide. Ask me anything.",
                "language": "en",
            },
        )
        avatar, _ = Avatar.objects.get_or_create(
            organisation=org,
            slug="guide",
            defaults={
                "name": "Systimz Guide",
                "provider": Provider.LOCAL,
                "voice_preset": voice,
                "knowledge_base": kb,
                "published": True,
                "allowed_origins": [base_url.rstrip("/")],
            },
        )
        ApiKey.objects.filter(organisation=org, name=DEMO_KEY_NAME, revoked_at=None).update(
            revoked_at=timezone.now()
        )
        issued = services.api_key_create(org=org, name=DEMO_KEY_NAME, scopes=Scope.values)
        password = admin_password or secrets.token_urlsafe(12)
        admin = User.objects.filter(username="admin").first()
        if admin is None:
            User.objects.create_superuser("admin", "admin@localhost", password)
        else:
            admin.set_password(password)
            admin.save(update_fields=["password"])
        talk_url = base_url.rstrip("/") + reverse("talk-page", args=[org.slug, avatar.slug])
        self.stdout.write(
            "\n".join(
                [
                    "Demo organisation: demo (trial)",
                    f"Talk page:         {talk_url}",
                    f"Admin:             {base_url.rstrip('/')}/admin/  (admin / {password})",
                    f"API docs:          {base_url.rstrip('/')}/api/v1/docs/",
                    f"API key:           {issued.secret}",
                ]
            )
        )
