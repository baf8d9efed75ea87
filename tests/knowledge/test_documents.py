from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from knowledge.models import Document
from tests import factories


@pytest.fixture
def kb(tenant):
    return factories.KnowledgeBaseFactory(organisation=tenant.org)


def _url(kb, doc=None):
    base = f"/api/v1/knowledge-bases/{kb.pk}/documents/"
    return f"{base}{doc}/" if doc else base


def test_json_document_is_normalised_and_ready(tenant, kb):
    response = tenant.client.post(
        _url(kb),
        {"title": "Returns", "content": "\ufeffLine one.  \r\nLine two.\r\n"},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["content"] == "Line one.\nLine two."
    assert (body["status"], body["format"], body["size_bytes"]) == ("ready", "text", 19)
    assert Document.objects.get(pk=body["id"]).organisation == tenant.org


@pytest.mark.parametrize(
    ("name", "content_type", "fmt"),
    [
        ("notes.txt", "text/plain", "text"),
        ("guide.md", "text/markdown", "markdown"),
        ("README", "text/markdown", "markdown"),
        ("x.markdown", "application/octet-stream", "markdown"),
    ],
)
def test_multipart_text_and_markdown_upload(tenant, kb, name, content_type, fmt):
    upload = SimpleUploadedFile(name, b"# Returns\n\nThirty days.", content_type=content_type)
    response = tenant.client.post(_url(kb), {"file": upload}, format="multipart")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["format"], body["content"]) == (fmt, "# Returns\n\nThirty days.")
    # A document that names itself (a first heading) keeps that name over the file's.
    assert body["title"] == "Returns"


def test_upload_with_explicit_title(tenant, kb):
    upload = SimpleUploadedFile("a.txt", b"Text.", content_type="text/plain")
    body = tenant.client.post(
        _url(kb), {"file": upload, "title": "Policy"}, format="multipart"
    ).json()
    assert body["title"] == "Policy"


def test_same_text_again_changes_nothing(tenant, kb):
    first = tenant.client.post(_url(kb), {"title": "A", "content": "Same text."}, format="json")
    upload = SimpleUploadedFile("b.txt", b"Same text.\n", content_type="text/plain")
    second = tenant.client.post(_url(kb), {"file": upload}, format="multipart")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert Document.objects.filter(knowledge_base=kb).count() == 1


def test_over_ten_megabytes_is_413(tenant, kb, settings):
    big = b"a" * (settings.DOCUMENT_MAX_BYTES + 1)
    upload = SimpleUploadedFile("big.txt", big, content_type="text/plain")
    response = tenant.client.post(_url(kb), {"file": upload}, format="multipart")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    as_json = tenant.client.post(_url(kb), {"title": "big", "content": big.decode()}, format="json")
    assert as_json.status_code == 413
    assert as_json.json()["error"]["code"] == "too_large"
    assert not Document.objects.exists()


def test_exactly_ten_megabytes_is_accepted(tenant, kb, settings):
    upload = SimpleUploadedFile(
        "ok.txt", b"a" * settings.DOCUMENT_MAX_BYTES, content_type="text/plain"
    )
    response = tenant.client.post(_url(kb), {"file": upload}, format="multipart")
    assert response.status_code == 201
    assert response.json()["size_bytes"] == settings.DOCUMENT_MAX_BYTES


def test_other_file_types_are_415_and_unreadable_ones_400(tenant, kb):
    docx = SimpleUploadedFile("a.docx", b"PK\x03\x04", content_type="application/msword")
    response = tenant.client.post(_url(kb), {"file": docx}, format="multipart")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    latin1 = SimpleUploadedFile("a.txt", "café".encode("latin-1"), content_type="text/plain")
    response = tenant.client.post(_url(kb), {"file": latin1}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"file": ["Not UTF-8 text."]}
    broken = SimpleUploadedFile("a.pdf", b"%PDF-1.4 garbage", content_type="application/pdf")
    response = tenant.client.post(_url(kb), {"file": broken}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()["error"]["fields"]
    assert not Document.objects.exists()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"content": "x"}, "title"),
        ({"title": "x"}, "content"),
        ({"title": "x", "content": "   "}, "content"),
    ],
)
def test_json_validation(tenant, kb, data, field):
    response = tenant.client.post(_url(kb), data, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_list_omits_content_and_detail_has_it(tenant, kb):
    doc = tenant.client.post(_url(kb), {"title": "A", "content": "Body."}, format="json").json()
    listed = tenant.client.get(_url(kb)).json()["results"]
    assert [item["id"] for item in listed] == [doc["id"]]
    assert "content" not in listed[0]
    assert tenant.client.get(_url(kb, doc["id"])).json()["content"] == "Body."


def test_only_title_can_change(tenant, kb):
    doc = tenant.client.post(_url(kb), {"title": "A", "content": "Body."}, format="json").json()
    response = tenant.client.patch(
        _url(kb, doc["id"]), {"title": "B", "content": "Hacked"}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["title"], response.json()["content"]) == ("B", "Body.")
    assert tenant.client.put(_url(kb, doc["id"]), {"title": "C"}, format="json").status_code == 405


def test_documents_of_another_knowledge_base_are_not_reachable_through_this_one(tenant, kb):
    other_kb = factories.KnowledgeBaseFactory(organisation=tenant.org)
    doc = factories.DocumentFactory(knowledge_base=other_kb)
    assert tenant.client.get(_url(kb, doc.pk)).status_code == 404
    assert tenant.client.get(_url(other_kb, doc.pk)).status_code == 200


def test_html_and_pdf_uploads_are_extracted(tenant, kb):
    from tests.knowledge.pdf import make_pdf

    html = SimpleUploadedFile(
        "hours.html",
        b"<html><head><title>Opening hours</title><script>x()</script></head>"
        b"<body><nav>Menu</nav><h1>Hours</h1><p>Open 9 to 5.</p></body></html>",
        content_type="text/html",
    )
    body = tenant.client.post(_url(kb), {"file": html}, format="multipart").json()
    assert (body["title"], body["format"], body["content"]) == (
        "Opening hours",
        "html",
        "# Hours\n\nOpen 9 to 5.",
    )
    pdf = SimpleUploadedFile(
        "guide.pdf", make_pdf(["Page one text.", "Page two text."]), content_type="application/pdf"
    )
    body = tenant.client.post(_url(kb), {"file": pdf}, format="multipart").json()
    assert (body["title"], body["format"], body["status"]) == ("guide", "pdf", "ready")
    assert body["content"] == "Page one text.\n\nPage two text."
    answer = tenant.client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/ask", {"question": "When are you open?"}, format="json"
    )
    assert answer.json()["citations"][0]["title"] == "Opening hours"


def test_html_as_json(tenant, kb):
    body = tenant.client.post(
        _url(kb),
        {"title": "T", "content": "<p>Hello <b>world</b></p>", "format": "html"},
        format="json",
    ).json()
    assert body["content"] == "Hello world"
