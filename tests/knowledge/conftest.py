from __future__ import annotations

import pytest

from knowledge import services
from knowledge.models import KnowledgeBase
from tests import factories

KETTLE_DOCS = {
    "Warranty": (
        "# Warranty\n\nEvery Boilo kettle has a warranty of two years from the date of purchase. "
        "The warranty covers the heating element and the thermostat.\n\n## Exclusions\n\n"
        "Limescale damage is not covered. Dropping the kettle voids the warranty."
    ),
    "Descaling": (
        "# Descaling\n\nDescale the kettle every four weeks in hard-water areas. "
        "Fill it with one part white vinegar and two parts water, boil, and leave it for an hour. "
        "Rinse twice before use."
    ),
    "Shipping": (
        "# Shipping\n\nOrders ship from Rotterdam within two working days. "
        "Delivery inside the EU takes three to five days and costs 4.95 euros. "
        "Orders above 50 euros ship free."
    ),
    "Temperature settings": (
        "# Temperature settings\n\nThe Boilo Pro heats water to 70, 80, 90 or 100 degrees "
        "Celsius. Green tea tastes best at 80 degrees. "
        "The keep-warm mode holds the temperature for 30 minutes."
    ),
    "Safety": (
        "# Safety\n\nNever fill the kettle above the MAX line of 1.7 litres. "
        "The kettle switches off automatically when it boils dry."
    ),
}


def load(kb: KnowledgeBase, docs: dict[str, str]) -> None:
    for title, content in docs.items():
        text = services.document_text_from_json(title=title, content=content, fmt="markdown")
        services.document_create(knowledge_base=kb, text=text)


@pytest.fixture
def kettle_kb(tenant) -> KnowledgeBase:
    kb = factories.KnowledgeBaseFactory(
        organisation=tenant.org,
        language="en",
        instructions="Answer briefly.",
        fallback_text="I don't know that one.",
    )
    load(kb, KETTLE_DOCS)
    return kb
