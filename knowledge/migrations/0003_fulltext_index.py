"""The full-text index over chunks, in the database's own engine.

PostgreSQL: a ``search_vector`` tsvector column (heading weighted A, text B) in each chunk's
own text search configuration, filled by a trigger, with a GIN index.
SQLite: an FTS5 table (Porter stemming over unicode61) kept in step by triggers.

Django's SQLite backend rebuilds a table to alter it, which drops its triggers: a later
migration that alters ``knowledge_chunk`` must re-run ``SQLITE_TRIGGERS`` (the sync test in
tests/knowledge/test_retrieval.py fails if it does not).
"""

from django.db import migrations

POSTGRES_FORWARD = [
    "ALTER TABLE knowledge_chunk ADD COLUMN search_vector tsvector",
    """
    CREATE FUNCTION knowledge_chunk_search_vector() RETURNS trigger AS $$
    BEGIN
      NEW.search_vector :=
        setweight(to_tsvector(NEW.ts_config::regconfig, coalesce(NEW.heading, '')), 'A') ||
        setweight(to_tsvector(NEW.ts_config::regconfig, coalesce(NEW.text, '')), 'B');
      RETURN NEW;
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER knowledge_chunk_search_vector BEFORE INSERT OR UPDATE OF heading, text, ts_config
    ON knowledge_chunk FOR EACH ROW EXECUTE FUNCTION knowledge_chunk_search_vector()
    """,
    "CREATE INDEX knowledge_chunk_search ON knowledge_chunk USING GIN (search_vector)",
]
POSTGRES_BACKWARD = [
    "DROP TRIGGER IF EXISTS knowledge_chunk_search_vector ON knowledge_chunk",
    "DROP FUNCTION IF EXISTS knowledge_chunk_search_vector()",
    "ALTER TABLE knowledge_chunk DROP COLUMN IF EXISTS search_vector",
]

SQLITE_TABLE = """
    CREATE VIRTUAL TABLE knowledge_chunk_fts USING fts5(
      heading, text, chunk_id UNINDEXED, knowledge_base_id UNINDEXED, organisation_id UNINDEXED,
      tokenize = 'porter unicode61 remove_diacritics 2'
    )
"""
SQLITE_TRIGGERS = [
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_ai",
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_ad",
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_au",
    """
    CREATE TRIGGER knowledge_chunk_fts_ai AFTER INSERT ON knowledge_chunk BEGIN
      INSERT INTO knowledge_chunk_fts(rowid, heading, text, chunk_id, knowledge_base_id, organisation_id)
      VALUES (new.rowid, new.heading, new.text, new.id, new.knowledge_base_id, new.organisation_id);
    END
    """,
    """
    CREATE TRIGGER knowledge_chunk_fts_ad AFTER DELETE ON knowledge_chunk BEGIN
      DELETE FROM knowledge_chunk_fts WHERE rowid = old.rowid;
    END
    """,
    """
    CREATE TRIGGER knowledge_chunk_fts_au AFTER UPDATE ON knowledge_chunk BEGIN
      DELETE FROM knowledge_chunk_fts WHERE rowid = old.rowid;
      INSERT INTO knowledge_chunk_fts(rowid, heading, text, chunk_id, knowledge_base_id, organisation_id)
      VALUES (new.rowid, new.heading, new.text, new.id, new.knowledge_base_id, new.organisation_id);
    END
    """,
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_ai",
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_ad",
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_au",
    "DROP TABLE IF EXISTS knowledge_chunk_fts",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0002_chunks_llm_endpoints_gaps")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRES_FORWARD, "sqlite": [SQLITE_TABLE, *SQLITE_TRIGGERS]}),
            _run({"postgresql": POSTGRES_BACKWARD, "sqlite": SQLITE_BACKWARD}),
        )
    ]
