"""OpenAPI descriptions of our own DRF classes (drf-spectacular extensions)."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "systimz.api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An organisation's API key: `Authorization: Bearer stz_…`.",
        }


# --- Error responses (POSTPROCESSING_HOOKS) -------------------------------------------------

ERROR_COMPONENT = "Error"
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The contract's error envelope.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": True},
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}
_DESCRIPTIONS = {
    "400": "invalid: the request is not valid",
    "401": "unauthenticated: no or a bad API key",
    "403": "forbidden: the key lacks the scope",
    "404": "not_found: no such object in this organisation",
    "406": "not_acceptable: cannot answer in the requested format",
    "409": "conflict: the object's state does not allow this",
    "413": "too_large: the request or file is too large",
    "415": "unsupported_media_type: the body's content type is not accepted here",
    "429": "rate_limited, concurrency_limit or quota_exceeded (with Retry-After)",
    "502": "provider_error: the avatar provider returned an error",
    "503": "provider_unavailable: the avatar provider cannot be reached",
}
_PROVIDER_PREFIXES = ("/api/v1/sessions", "/api/v1/knowledge-bases/{id}/ask")


def _error_statuses(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    """The error statuses an operation can answer with, from what every API view shares."""
    statuses = ["400", "401", "403", "404", "406", "429"]
    if "requestBody" in operation:
        statuses += ["413", "415"]
    if method != "get":
        statuses.append("409")
    if path.startswith(_PROVIDER_PREFIXES):
        statuses += ["502", "503"]
    return statuses


def add_error_responses(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: document the error envelope on every operation, so
    clients (and schema fuzzers) know the 4xx/5xx an operation answers with and their shape."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(ERROR_COMPONENT, _ERROR_SCHEMA)
    ref = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            for status in _error_statuses(path, method, operation):
                responses.setdefault(
                    status,
                    {
                        "description": _DESCRIPTIONS[status],
                        "content": {"application/json": {"schema": ref}},
                    },
                )
    return result
