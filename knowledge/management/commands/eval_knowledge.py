from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge.evaluation import evaluate, load_cases
from knowledge.models import KnowledgeBase


class Command(BaseCommand):
    help = (
        "Evaluate a knowledge base against a JSON-lines file of "
        '{"question", "expected_document"?, "answerable"} and print the answered-correctly, '
        "cited-correctly and refused-correctly rates. Records no gaps."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kb_id")
        parser.add_argument("questions", type=Path)
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")
        parser.add_argument("--failures", action="store_true", help="List each miss too.")

    def handle(self, *args: Any, kb_id: str, questions: Path, **options: Any) -> None:
        try:
            kb = KnowledgeBase.objects.select_related("organisation").get(pk=kb_id)
        except (KnowledgeBase.DoesNotExist, ValueError, ValidationError):
            raise CommandError(f"No knowledge base {kb_id!r}.") from None
        try:
            cases = load_cases(questions)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        report = evaluate(kb, cases)
        summary = report.summary()
        if options["json"]:
            self.stdout.write(
                json.dumps(summary | ({"failures": report.failures} if options["failures"] else {}))
            )
            return
        self.stdout.write(
            f"questions: {report.answerable} answerable, {report.unanswerable} unanswerable\n"
            f"answered-correctly: {summary['answered_correctly']:.1%}\n"
            f"cited-correctly:    {summary['cited_correctly']:.1%}\n"
            f"refused-correctly:  {summary['refused_correctly']:.1%}"
        )
        if options["failures"]:
            for failure in report.failures:
                self.stdout.write(json.dumps(failure))
