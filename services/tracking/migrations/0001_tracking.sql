-- Tracking: one entry per event of an order, what is known of each order, KPI sums per hour.

-- The timeline. event_id is unique: a redelivered event never adds a second entry.
-- Read in (occurred_at, sequence, event_id) order, whatever the arrival order was.
CREATE TABLE IF NOT EXISTS timeline_entries (
    event_id     text        PRIMARY KEY,
    order_id     text        NOT NULL,
    type         text        NOT NULL,
    step         text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    sequence     bigint      NOT NULL DEFAULT 0,
    source       text        NOT NULL DEFAULT '',
    topic        text        NOT NULL DEFAULT '',
    details      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    explanation  text        NOT NULL DEFAULT '',
    location_ids text[]      NOT NULL DEFAULT '{}',
    return_id    text,
    decoded      boolean     NOT NULL DEFAULT true,
    received_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS timeline_entries_by_order
    ON timeline_entries (order_id, occurred_at, sequence, event_id);

-- Every watcher of any replica LISTENs on this channel; the payload is the order id.
-- Notifications are delivered at commit, so a woken watcher always sees the new row.
CREATE OR REPLACE FUNCTION notify_timeline_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tutti_tracking_timeline', NEW.order_id);
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS timeline_entries_notify ON timeline_entries;
CREATE TRIGGER timeline_entries_notify AFTER INSERT ON timeline_entries
    FOR EACH ROW EXECUTE FUNCTION notify_timeline_entry();

-- What is known of each order, folded from its events (services.tracking.domain.model.OrderFacts).
CREATE TABLE IF NOT EXISTS order_index (
    order_id          text        PRIMARY KEY,
    first_seen_at     timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    customer_id       text,
    channel           text,
    location_ids      text[]      NOT NULL DEFAULT '{}',
    status            text,
    last_occurred_at  timestamptz,
    last_sequence     bigint,
    last_event_id     text,
    entry_count       integer     NOT NULL DEFAULT 0,
    placed_at         timestamptz,
    prepared_at       timestamptz,
    cancelled_at      timestamptz,
    refused_at        timestamptz,
    returned_at       timestamptz,
    promised_at       timestamptz,
    promised_key      jsonb,
    cost_currency     text,
    cost_minor        bigint,
    cost_key          jsonb
);
CREATE INDEX IF NOT EXISTS order_index_by_seen ON order_index (first_seen_at DESC, order_id DESC);
CREATE INDEX IF NOT EXISTS order_index_by_customer ON order_index (customer_id, first_seen_at DESC, order_id DESC);
CREATE INDEX IF NOT EXISTS order_index_by_channel ON order_index (channel, first_seen_at DESC, order_id DESC);
CREATE INDEX IF NOT EXISTS order_index_by_status ON order_index (status, first_seen_at DESC, order_id DESC);
CREATE INDEX IF NOT EXISTS order_index_by_location ON order_index USING gin (location_ids);

-- KPI sums: per channel ('' when unknown), hour and metric (services.tracking.domain.model).
CREATE TABLE IF NOT EXISTS kpi_hourly (
    channel  text        NOT NULL,
    bucket   timestamptz NOT NULL,
    metric   text        NOT NULL,
    value    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, channel, metric)
);
