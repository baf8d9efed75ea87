"""The REST API under /api/v1/. Every path works with or without its trailing slash."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from avatars.api.views import AvatarViewSet, VoicePresetViewSet
from knowledge.api.views import DocumentViewSet, KnowledgeBaseViewSet, LLMEndpointViewSet
from sessions.api.usage import UsageView
from sessions.api.views import SessionViewSet
from systimz import views
from systimz.api.viewsets import UUID_PATTERN
from systimz.orgs.api.views import ApiKeyViewSet, OrganisationView, ProviderCredentialViewSet
from systimz.webhooks.api.views import WebhookViewSet


class Router(SimpleRouter):
    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"  # DRF's constructor only knows "/" or ""


router = Router()
router.register("api-keys", ApiKeyViewSet, basename="api-key")
router.register("provider-credentials", ProviderCredentialViewSet, basename="provider-credential")
router.register("voice-presets", VoicePresetViewSet, basename="voice-preset")
router.register("llm-endpoints", LLMEndpointViewSet, basename="llm-endpoint")
router.register("knowledge-bases", KnowledgeBaseViewSet, basename="knowledge-base")
router.register(
    rf"knowledge-bases/(?P<knowledge_base_id>{UUID_PATTERN})/documents",
    DocumentViewSet,
    basename="document",
)
router.register("avatars", AvatarViewSet, basename="avatar")
router.register("sessions", SessionViewSet, basename="session")
router.register("webhooks", WebhookViewSet, basename="webhook")

urlpatterns = [
    re_path(r"^organisation/?$", OrganisationView.as_view(), name="organisation"),
    re_path(r"^usage/?$", UsageView.as_view(), name="usage"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its script from a URL, so the page works under our CSP.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
    *router.urls,
    # Anything else under /api/v1/ is the contract's 404, in DEBUG too.
    re_path(r"", views.api_not_found),
]
