-- CreateDraftRules is idempotent by the caller's request id: one draft per key.
ALTER TABLE rule_versions ADD COLUMN IF NOT EXISTS request_id text;
CREATE UNIQUE INDEX IF NOT EXISTS rule_versions_by_request ON rule_versions (request_id)
    WHERE request_id IS NOT NULL;
