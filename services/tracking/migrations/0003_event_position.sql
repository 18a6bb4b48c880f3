-- Events of one change share occurred_at and sequence; their position within the change
-- (the envelope's position) keeps them in the order they happened: placed before sourced.
ALTER TABLE timeline_entries ADD COLUMN IF NOT EXISTS position integer NOT NULL DEFAULT 0;
ALTER TABLE order_index ADD COLUMN IF NOT EXISTS last_position integer NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS timeline_entries_in_order
    ON timeline_entries (order_id, occurred_at, sequence, position, event_id);
DROP INDEX IF EXISTS timeline_entries_by_order;
