"""A URLconf with a view that crashes, for the 500 envelope test."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from systimz import views


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


urlpatterns = [path("api/v1/boom/", boom)]
handler500 = views.server_error
