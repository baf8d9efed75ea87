from django.urls import path

from sessions import local_media, views

urlpatterns = [
    path(
        "media/local/<uuid:session_id>/<str:task_id>/<int:index>.wav",
        local_media.local_audio,
        name="local-audio",
    ),
    path("talk/<slug:org_slug>/<slug:avatar_slug>/", views.talk_page, name="talk-page"),
]
