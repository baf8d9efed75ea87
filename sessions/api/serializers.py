from __future__ import annotations

from typing import Any

from rest_framework import serializers

from avatars.models import Quality
from sessions.models import AvatarSession, CloseReason
from sessions.player import player_token
from systimz.api.serializers import StrictStringsMixin


class SessionCreateSerializer(StrictStringsMixin, serializers.Serializer):
    avatar = serializers.SlugField(help_text="The avatar's slug")
    quality = serializers.ChoiceField(choices=Quality.choices, required=False)
    end_user = serializers.CharField(max_length=200, required=False, allow_blank=True)


class SpeakSerializer(StrictStringsMixin, serializers.Serializer):
    text = serializers.CharField(max_length=2000)
    mode = serializers.ChoiceField(choices=["repeat", "chat"], default="repeat")


class EventSerializer(serializers.Serializer):
    """A server message (``sessions.events.event_message``): these fields and the type's own
    (``status``/``reason``, ``task_id``, ``message``, ``duration_ms``, ``code``...)."""

    type = serializers.CharField()
    session_id = serializers.UUIDField()
    seq = serializers.IntegerField()
    at = serializers.CharField(help_text="ISO 8601 UTC with milliseconds")


class SessionSerializer(serializers.ModelSerializer):
    avatar = serializers.CharField(source="avatar_slug")
    # Explicit: "" while the session is open, which the model's choices (and so the
    # generated schema's enum) do not include.
    close_reason = serializers.ChoiceField(
        choices=CloseReason.choices, allow_blank=True, read_only=True
    )
    player = serializers.SerializerMethodField()
    media = serializers.SerializerMethodField()
    last_seq = serializers.SerializerMethodField(
        help_text="The seq of the session's latest event: resume after it for new ones only."
    )

    class Meta:
        model = AvatarSession
        fields = [
            "id",
            "status",
            "close_reason",
            "avatar",
            "provider",
            "quality",
            "end_user",
            "created_at",
            "started_at",
            "expires_at",
            "ended_at",
            "player",
            "media",
            "last_seq",
        ]
        read_only_fields = fields

    def get_player(self, session: AvatarSession) -> dict[str, str]:
        return {"websocket_url": f"/ws/sessions/{session.pk}/", "token": player_token(session)}

    def get_last_seq(self, session: AvatarSession) -> int:
        return session.next_seq - 1

    def get_media(self, session: AvatarSession) -> dict[str, Any]:
        """What the browser connects to: the provider's media room, or, for the local avatar,
        where it fetches each task's audio (``<audio_url><task_id>/<n>.wav?token=``)."""
        media = dict(session.media)
        if media.get("kind") == "local":
            media["audio_url"] = f"/media/local/{session.pk}/"
        return media


class SessionDetailSerializer(SessionSerializer):
    transcript = serializers.SerializerMethodField()

    class Meta(SessionSerializer.Meta):
        fields = [*SessionSerializer.Meta.fields, "transcript"]
        read_only_fields = fields

    def get_transcript(self, session: AvatarSession) -> list[dict[str, Any]]:
        """Who said what and when; the avatar's lines with their task id and, once the avatar
        has finished saying them, how long that took (``duration_ms``)."""
        durations = {
            e.payload.get("task_id"): e.payload.get("duration_ms")
            for e in session.events.filter(type="avatar_stop_talking")
        }
        lines: list[dict[str, Any]] = []
        for event in session.events.filter(type="task").order_by("seq"):
            payload, at = event.payload, event.created_at.isoformat()
            if payload.get("question"):
                lines.append({"who": "user", "text": payload["question"], "at": at})
            line = {
                "who": "avatar",
                "text": payload.get("text", ""),
                "mode": payload.get("mode"),
                "task_id": payload.get("task_id"),
                "duration_ms": durations.get(payload.get("task_id")),
                "at": at,
            }
            if "citations" in payload:
                line["citations"] = payload["citations"]
            lines.append(line)
        return lines
