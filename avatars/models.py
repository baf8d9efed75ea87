"""The avatar catalogue: voice presets and avatars."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from systimz.orgs.models import OrgOwnedModel

language_validator = RegexValidator(
    r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
    "A BCP 47 language tag such as en, de or en-GB.",
)


class Provider(models.TextChoices):
    LOCAL = "local", "Built-in local avatar"
    HEYGEN = "heygen", "HeyGen Interactive Avatar"
    LIVEAVATAR = "liveavatar", "HeyGen LiveAvatar"


class Emotion(models.TextChoices):
    EXCITED = "excited", "Excited"
    SERIOUS = "serious", "Serious"
    FRIENDLY = "friendly", "Friendly"
    SOOTHING = "soothing", "Soothing"
    BROADCASTER = "broadcaster", "Broadcaster"


class Quality(models.TextChoices):
    HIGH = "high", "High (2000 kbps, 720p)"
    MEDIUM = "medium", "Medium (1000 kbps, 480p)"
    LOW = "low", "Low (500 kbps, 360p)"


class AvatarKind(models.TextChoices):
    PUBLIC = "public", "Public"
    INSTANT = "instant", "Instant"
    STUDIO = "studio", "Studio"


class ChatMode(models.TextChoices):
    SYSTIMZ = "systimz", "Systimz answers from the knowledge base"
    PROVIDER = "provider", "The provider's own LLM answers (HeyGen / LiveAvatar)"


RATE_MIN, RATE_MAX = 0.5, 1.5


class VoicePreset(OrgOwnedModel):
    name = models.CharField(max_length=100)
    voice_id = models.CharField(max_length=200)
    rate = models.FloatField(
        default=1.0, validators=[MinValueValidator(RATE_MIN), MaxValueValidator(RATE_MAX)]
    )
    emotion = models.CharField(max_length=20, choices=Emotion.choices, null=True, blank=True)
    language = models.CharField(max_length=35, blank=True, validators=[language_validator])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "name"],
                name="voice_preset_name",
                violation_error_message="A voice preset with this name already exists.",
            ),
            models.CheckConstraint(
                condition=models.Q(rate__gte=RATE_MIN, rate__lte=RATE_MAX), name="voice_rate_range"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Avatar(OrgOwnedModel):
    slug = models.SlugField(max_length=60)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=AvatarKind.choices, default=AvatarKind.PUBLIC)
    provider = models.CharField(max_length=20, choices=Provider.choices, default=Provider.LOCAL)
    provider_avatar_id = models.CharField(
        max_length=200, blank=True, help_text="The provider's avatar id; blank for local."
    )
    voice_preset = models.ForeignKey(
        VoicePreset, null=True, blank=True, on_delete=models.SET_NULL, related_name="avatars"
    )
    knowledge_base = models.ForeignKey(
        "knowledge.KnowledgeBase",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="avatars",
    )
    chat_mode = models.CharField(
        max_length=10,
        choices=ChatMode.choices,
        default=ChatMode.SYSTIMZ,
        help_text="Who writes chat replies. 'provider' hands the provider a prompt built from "
        "the knowledge base (HeyGen and LiveAvatar only).",
    )
    provider_knowledge_id = models.CharField(
        max_length=200,
        blank=True,
        help_text="A knowledge base id at the provider; with chat_mode 'provider' it is used "
        "instead of the prompt built from the knowledge base.",
    )
    quality = models.CharField(max_length=10, choices=Quality.choices, default=Quality.MEDIUM)
    language = models.CharField(max_length=35, default="en", validators=[language_validator])
    published = models.BooleanField(default=False)
    allowed_origins = models.JSONField(
        default=list, blank=True, help_text="Origins allowed to embed and start the talk page."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "slug"],
                name="avatar_slug",
                violation_error_message="An avatar with this slug already exists.",
            ),
        ]
        indexes = [models.Index(fields=["organisation", "published"])]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        foreign = {
            name: "Not found."
            for name in ("voice_preset", "knowledge_base")
            if getattr(self, f"{name}_id")
            and getattr(self, name).organisation_id != self.organisation_id
        }
        if self.provider == Provider.LOCAL and self.chat_mode == ChatMode.PROVIDER:
            foreign["chat_mode"] = "The local avatar has no language model: use 'systimz'."
        if foreign:
            raise ValidationError(foreign)
