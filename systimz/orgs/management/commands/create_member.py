from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from systimz import errors
from systimz.orgs import services
from systimz.orgs.models import Organisation


class Command(BaseCommand):
    help = (
        "Create a Django admin login for a member of an organisation; they see only its "
        "objects. Prints the password when one is generated."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("org_slug")
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--password", help="Default: a generated password, printed once.")

    def handle(self, *args: Any, org_slug: str, username: str, **options: Any) -> None:
        org = Organisation.objects.filter(slug=org_slug).first()
        if org is None:
            raise CommandError(f"No organisation {org_slug!r}.")
        try:
            user, password = services.member_create(
                org=org, username=username, email=options["email"], password=options["password"]
            )
        except errors.SystimzError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write(f"Created member {user.username} of {org.slug}.")
        if not options["password"]:
            self.stdout.write(f"password: {password}")
