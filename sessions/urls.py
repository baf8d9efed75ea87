from django.urls import path

from sessions import views

urlpatterns = [
    path("talk/<slug:org_slug>/<slug:avatar_slug>/", views.talk_page, name="talk-page"),
]
