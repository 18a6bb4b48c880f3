-- Returns (RMAs), their lines, receipts, exchanges, the steps shown on timelines and the
-- inventory effects still to apply. The runtime adds outbox and inbox to this schema.

CREATE TABLE IF NOT EXISTS returns (
    return_id              text        PRIMARY KEY,
    order_id               text        NOT NULL,
    request_id             text        NOT NULL,
    -- Hash of the request's content: a reused request_id with other content is rejected.
    fingerprint            text        NOT NULL,
    source                 text        NOT NULL,
    purchase_channel       text        NOT NULL,
    initiated_channel      text        NOT NULL,
    method                 text        NOT NULL,
    status                 text        NOT NULL,
    receiving_location_id  text        NOT NULL,
    created_at             timestamptz NOT NULL,
    expected_at            timestamptz,
    currency               text        NOT NULL,
    customer_id            text        NOT NULL DEFAULT '',
    exchange_id            text        NOT NULL DEFAULT '',
    label_fee_charged      boolean     NOT NULL DEFAULT false,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, request_id)
);
CREATE INDEX IF NOT EXISTS returns_by_order ON returns (order_id, created_at);

CREATE TABLE IF NOT EXISTS return_lines (
    return_id          text    NOT NULL REFERENCES returns (return_id),
    line_id            text    NOT NULL,
    position           int     NOT NULL,
    sku                text    NOT NULL,
    category           text    NOT NULL DEFAULT '',
    quantity           int     NOT NULL CHECK (quantity > 0),
    reason             text    NOT NULL,
    unit_price_minor   bigint  NOT NULL,
    note               text    NOT NULL DEFAULT '',
    received_quantity  int     NOT NULL DEFAULT 0 CHECK (received_quantity BETWEEN 0 AND quantity),
    refunded_minor     bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (return_id, line_id)
);

-- One row per receipt: its id is the idempotency key (a receipt recorded twice restocks once).
CREATE TABLE IF NOT EXISTS receipts (
    return_id    text        NOT NULL REFERENCES returns (return_id),
    receipt_id   text        NOT NULL,
    location_id  text        NOT NULL,
    received_at  timestamptz NOT NULL,
    items        jsonb       NOT NULL,
    refund       jsonb       NOT NULL,
    PRIMARY KEY (return_id, receipt_id)
);

CREATE TABLE IF NOT EXISTS exchanges (
    exchange_id       text        PRIMARY KEY,
    return_id         text        NOT NULL UNIQUE REFERENCES returns (return_id),
    order_id          text        NOT NULL,
    original_line_id  text        NOT NULL,
    original_sku      text        NOT NULL,
    replacement_sku   text        NOT NULL,
    quantity          int         NOT NULL,
    fulfilment        text        NOT NULL,
    location_id       text        NOT NULL,
    reservation_id    text        NOT NULL,
    shipping_address  bytea,
    created_at        timestamptz NOT NULL,
    cancelled         boolean     NOT NULL DEFAULT false
);

-- Every step of a return as published, for GetReturn's history.
CREATE TABLE IF NOT EXISTS return_steps (
    id           bigserial   PRIMARY KEY,
    return_id    text        NOT NULL REFERENCES returns (return_id),
    type         text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    location_id  text        NOT NULL DEFAULT '',
    summary      text        NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS return_steps_by_return ON return_steps (return_id, id);

-- Effects on inventory decided in a transaction and applied after it (inline, then retried by
-- a background worker until inventory acknowledges). task_id is the inventory idempotency key.
CREATE TABLE IF NOT EXISTS inventory_tasks (
    task_id         text        PRIMARY KEY,
    return_id       text        NOT NULL,
    kind            text        NOT NULL,
    sku             text        NOT NULL,
    location_id     text        NOT NULL,
    quantity        int         NOT NULL,
    expected_at     timestamptz,
    reservation_id  text        NOT NULL DEFAULT '',
    reference       text        NOT NULL DEFAULT '',
    supply_id       text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text        NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS inventory_tasks_pending ON inventory_tasks (next_attempt_at) WHERE done_at IS NULL;
