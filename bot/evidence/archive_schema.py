"""The archive's PostgreSQL schema, as numbered migrations (applied once, in order)."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE hitl_audit (
    seq         bigint PRIMARY KEY,
    entry_id    text NOT NULL UNIQUE,
    prev_hash   char(64) NOT NULL,
    hash        char(64) NOT NULL,
    fields      text NOT NULL,            -- canonical JSON of the entry's fields: exactly what was hashed
    event       text NOT NULL,
    request_id  text NOT NULL,
    actor       text NOT NULL,
    at          text NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hitl_audit_request ON hitl_audit (request_id);
CREATE TABLE hitl_audit_checkpoints (
    seq     bigint PRIMARY KEY,
    hash    char(64) NOT NULL,
    time_ms bigint NOT NULL,
    sig     text NOT NULL,
    key_id  text NOT NULL
);
CREATE FUNCTION hitl_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER hitl_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON hitl_audit
    FOR EACH STATEMENT EXECUTE FUNCTION hitl_audit_append_only();
CREATE TRIGGER hitl_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON hitl_audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION hitl_audit_append_only();
"""),
]

INSERT_ONLY_ROLE = """
-- run once as the tables' owner (after `hitl audit archive --migrate --to <owner url>`)
CREATE ROLE hitl_archiver LOGIN PASSWORD 'change-me';
GRANT CONNECT ON DATABASE hitl TO hitl_archiver;
GRANT USAGE ON SCHEMA public TO hitl_archiver;
GRANT SELECT, INSERT ON hitl_audit, hitl_audit_checkpoints TO hitl_archiver;
GRANT SELECT ON hitl_audit_schema TO hitl_archiver;
"""
