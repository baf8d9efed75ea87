from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from systimz.orgs import crypto, services


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored third-party key (provider credentials, LLM endpoints) under "
        "the first key of SYSTIMZ_ENCRYPTION_KEYS. "
        "Safe to run again and to interrupt; remove an old key only after a run that reports "
        "failed=0."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args: Any, batch_size: int, **options: Any) -> None:
        report = services.encrypted_keys_rotate(batch_size=batch_size)
        self.stdout.write(
            f"rotated={report.rotated} already_current={report.already_current} "
            f"failed={report.failed} total={report.total} key_id={crypto.current_key_id()}"
        )
        if report.failed:
            raise CommandError(
                f"{report.failed} credential(s) could not be decrypted with any configured key; "
                "see the log for their ids. Keep the old keys until they are fixed or deleted."
            )
