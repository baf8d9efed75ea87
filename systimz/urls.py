from django.contrib import admin
from django.urls import include, path

from systimz import health, views

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("healthz/", health.healthz),
    path("api/v1/", include("systimz.api.urls")),
    path("admin/", admin.site.urls),
    path("", include("sessions.urls")),
]

handler400 = views.bad_request
handler403 = views.permission_denied
handler404 = views.page_not_found
handler500 = views.server_error
