"""Knowledge bases, their documents and chunks, answerer endpoints and unanswered questions."""

from __future__ import annotations

from django.db import models

from avatars.models import language_validator
from systimz.orgs.models import EncryptedKeyModel, OrgOwnedModel

DEFAULT_FALLBACK_TEXT = (
    "I'm sorry, I don't have that information. Could you rephrase, or ask about something else?"
)


class LLMEndpoint(EncryptedKeyModel):
    """An OpenAI-compatible chat-completions endpoint of the organisation's choosing."""

    cipher_purpose = "llm-endpoint"

    name = models.CharField(max_length=100)
    base_url = models.URLField(max_length=300, help_text="e.g. https://api.openai.com/v1")
    model = models.CharField(max_length=100)
    timeout_seconds = models.FloatField(default=20.0)

    class Meta:
        ordering = ["name"]
        verbose_name = "LLM endpoint"
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "name"],
                name="llm_endpoint_name",
                violation_error_message="An LLM endpoint with this name already exists.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.model})"

    def __repr__(self) -> str:
        return f"<LLMEndpoint {self.pk} {self.base_url} …{self.last4}>"


class KnowledgeBase(OrgOwnedModel):
    name = models.CharField(max_length=200)
    instructions = models.TextField(blank=True, help_text="How the avatar should answer.")
    opening_text = models.TextField(blank=True, help_text="Spoken when a session starts.")
    fallback_text = models.TextField(
        default=DEFAULT_FALLBACK_TEXT, help_text="Said when the documents do not support an answer."
    )
    language = models.CharField(max_length=35, blank=True, validators=[language_validator])
    llm_endpoint = models.ForeignKey(
        LLMEndpoint,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="knowledge_bases",
        help_text="Answer with this LLM; blank: the offline extractive answerer.",
    )
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
    HTML = "html", "HTML"
    PDF = "pdf", "PDF"


class Document(OrgOwnedModel):
    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="documents"
    )
    title = models.CharField(max_length=300)
    content = models.TextField(help_text="The normalised text (extracted, for HTML and PDF).")
    format = models.CharField(max_length=20, choices=DocumentFormat.choices, default="text")
    size_bytes = models.PositiveIntegerField(default=0)
    content_hash = models.CharField(max_length=64, db_index=True)
    status = models.CharField(
        max_length=10, choices=DocumentStatus.choices, default=DocumentStatus.PENDING
    )
    failure_reason = models.TextField(blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["organisation", "knowledge_base", "status"])]

    def __str__(self) -> str:
        return self.title


class Chunk(OrgOwnedModel):
    """A retrievable passage. The full-text index over ``heading`` and ``text`` lives in the
    database (a tsvector column with a GIN index on PostgreSQL, an FTS5 table on SQLite), kept
    in step by triggers; see migration 0002 and ``knowledge.retrieval``."""

    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    heading = models.CharField(max_length=500, blank=True)
    text = models.TextField()
    ts_config = models.CharField(max_length=32, default="english")
    embedding = models.BinaryField(
        null=True, blank=True, help_text="all-MiniLM-L6-v2 float32[384], with KNOWLEDGE_SEMANTIC."
    )

    class Meta:
        ordering = ["document", "position"]
        indexes = [models.Index(fields=["organisation", "knowledge_base"])]
        constraints = [
            models.UniqueConstraint(fields=["document", "position"], name="chunk_position")
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.position}"


class GapReason(models.TextChoices):
    REFUSED = "refused", "Refused (no supporting passage)"
    LOW_SUPPORT = "low_support", "Answered with low support"


class UnansweredQuestion(OrgOwnedModel):
    """A question the answerer refused or barely supported, kept so the organisation can see
    what its documents are missing. ``group_key`` (its sorted content terms) groups similar
    wordings."""

    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="unanswered_questions"
    )
    question = models.TextField()
    group_key = models.CharField(max_length=300, db_index=True)
    reason = models.CharField(max_length=20, choices=GapReason.choices)
    support = models.FloatField(default=0.0)
    session_id = models.UUIDField(null=True, blank=True, db_index=True)
    source = models.CharField(max_length=20, default="console")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["organisation", "knowledge_base", "group_key"])]

    def __str__(self) -> str:
        return self.question[:80]
