from django.urls import path

from sessions import local_media, talk

urlpatterns = [
    path(
        "media/local/<uuid:session_id>/<str:task_id>/<int:index>.wav",
        local_media.local_audio,
        name="local-audio",
    ),
    path("talk/<slug:org_slug>/<slug:avatar_slug>/", talk.talk_page, name="talk-page"),
    path(
        "talk/<slug:org_slug>/<slug:avatar_slug>/sessions",
        talk.TalkSessionStart.as_view(),
        name="talk-start",
    ),
    path(
        "talk/<slug:org_slug>/<slug:avatar_slug>/embed.js",
        talk.embed_script,
        name="talk-embed",
    ),
]
