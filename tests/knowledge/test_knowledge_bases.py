from __future__ import annotations

URL = "/api/v1/knowledge-bases/"


def test_create_update_delete(tenant):
    created = tenant.client.post(
        URL, {"name": "FAQ", "instructions": "Be brief.", "opening_text": "Hi!"}, format="json"
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["name"], body["instructions"], body["opening_text"]) == ("FAQ", "Be brief.", "Hi!")
    patched = tenant.client.patch(f"{URL}{body['id']}/", {"opening_text": "Hello"}, format="json")
    assert patched.json()["opening_text"] == "Hello"
    assert tenant.client.delete(f"{URL}{body['id']}/").status_code == 204
    assert tenant.client.get(f"{URL}{body['id']}/").status_code == 404


def test_name_is_required_and_unique_in_the_organisation(tenant):
    assert tenant.client.post(URL, {}, format="json").json()["error"]["fields"] == {
        "name": ["This field is required."]
    }
    tenant.client.post(URL, {"name": "FAQ"}, format="json")
    again = tenant.client.post(URL, {"name": "FAQ"}, format="json")
    assert again.status_code == 400
    assert list(again.json()["error"]["fields"]) == ["name"]


def test_search_by_name(tenant):
    for name in ("Returns policy", "Shipping", "Returns FAQ"):
        tenant.client.post(URL, {"name": name}, format="json")
    found = tenant.client.get(URL, {"search": "returns"}).json()["results"]
    assert sorted(kb["name"] for kb in found) == ["Returns FAQ", "Returns policy"]
