"""Knowledge bases and their documents."""

from __future__ import annotations

from django.db import models

from avatars.models import language_validator
from systimz.orgs.models import OrgOwnedModel


class KnowledgeBase(OrgOwnedModel):
    name = models.CharField(max_length=200)
    instructions = models.TextField(blank=True, help_text="How the avatar should answer.")
    opening_text = models.TextField(blank=True, help_text="Spoken when a session starts.")
    language = models.CharField(max_length=35, blank=True, validators=[language_validator])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "name"],
                name="knowledge_base_name",
                violation_error_message="A knowledge base with this name already exists.",
            )
        ]

    def __str__(self) -> str:
        return self.name


class DocumentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class DocumentFormat(models.TextChoices):
    TEXT = "text", "Plain text"
    MARKDOWN = "markdown", "Markdown"


class Document(OrgOwnedModel):
    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="documents"
    )
    title = models.CharField(max_length=300)
    content = models.TextField()
    format = models.CharField(max_length=20, choices=DocumentFormat.choices, default="text")
    size_bytes = models.PositiveIntegerField(default=0)
    content_hash = models.CharField(max_length=64, db_index=True)
    status = models.CharField(
        max_length=10, choices=DocumentStatus.choices, default=DocumentStatus.PENDING
    )
    failure_reason = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["organisation", "knowledge_base", "status"])]

    def __str__(self) -> str:
        return self.title
