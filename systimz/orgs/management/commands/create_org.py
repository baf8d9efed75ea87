from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from systimz import errors
from systimz.orgs import services
from systimz.orgs.models import Plan, Scope


class Command(BaseCommand):
    help = (
        "Create an organisation and print a new API key with every scope, alone on the last "
        "line of the output."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--plan", choices=Plan.values, default=Plan.TRIAL)

    def handle(self, *args: Any, slug: str, name: str, plan: str, **options: Any) -> None:
        try:
            with transaction.atomic():
                org = services.organisation_create(slug=slug, name=name, plan=plan)
                issued = services.api_key_create(
                    org=org, name="created with create_org", scopes=Scope.values
                )
        except errors.SystimzError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write(f"Created organisation {org.slug} ({org.get_plan_display()}). API key:")
        self.stdout.write(issued.secret)
