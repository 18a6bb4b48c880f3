-- Orders, their lines, sourcing decisions (with the inputs they saw), rules versions and quotes.
-- Applied into the schema "orchestrator"; outbox and inbox come from runtime/migrations.

CREATE TABLE IF NOT EXISTS rule_versions (
    version       bigserial   PRIMARY KEY,
    status        text        NOT NULL CHECK (status IN ('draft', 'live', 'retired')),
    name          text        NOT NULL,
    document      text        NOT NULL,
    author        text        NOT NULL DEFAULT '',
    comment       text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
-- At most one live version.
CREATE UNIQUE INDEX IF NOT EXISTS rule_versions_one_live ON rule_versions ((true)) WHERE status = 'live';

-- Every publication and rollback, in order: what RollbackRules goes back through.
CREATE TABLE IF NOT EXISTS rule_publications (
    id            bigserial   PRIMARY KEY,
    version       bigint      NOT NULL REFERENCES rule_versions (version),
    action        text        NOT NULL CHECK (action IN ('publish', 'rollback', 'bootstrap')),
    published_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS quotes (
    quote_id      text        PRIMARY KEY,
    channel       text        NOT NULL,
    request       jsonb       NOT NULL,
    options       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS quotes_expiry ON quotes (expires_at);

CREATE TABLE IF NOT EXISTS orders (
    order_id            text        PRIMARY KEY,
    channel             text        NOT NULL,
    channel_order_id    text        NOT NULL,
    customer_id         text        NOT NULL,
    method              text        NOT NULL,
    address             jsonb       NOT NULL,
    pickup_location_id  text,
    status              text        NOT NULL,
    promised_at         timestamptz,
    delivery_price_minor bigint     NOT NULL DEFAULT 0,
    currency            text        NOT NULL DEFAULT 'EUR',
    quote_id            text,
    rules_version       bigint,
    payload_hash        text        NOT NULL,
    version             bigint      NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel, channel_order_id)
);
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, created_at DESC, order_id DESC);
CREATE INDEX IF NOT EXISTS orders_by_created ON orders (created_at DESC);

CREATE TABLE IF NOT EXISTS order_lines (
    order_id          text        NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    line_id           text        NOT NULL,
    position          int         NOT NULL,
    sku               text        NOT NULL,
    quantity          bigint      NOT NULL CHECK (quantity > 0),
    unit_price_minor  bigint      NOT NULL DEFAULT 0,
    currency          text        NOT NULL DEFAULT 'EUR',
    location_id       text        NOT NULL,
    status            text        NOT NULL,
    reservation_id    text        NOT NULL,
    reason            text        NOT NULL DEFAULT '',
    -- Locations that rejected or failed this line: never chosen again for it.
    excluded          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    sourced_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, line_id)
);
-- Store workload (open orders per location today) and the accept-timeout sweep.
CREATE INDEX IF NOT EXISTS order_lines_open_by_location ON order_lines (location_id, sourced_at)
    WHERE status IN ('sourced', 'accepted', 'picked', 'packed');
CREATE INDEX IF NOT EXISTS order_lines_awaiting_acceptance ON order_lines (sourced_at) WHERE status = 'sourced';

CREATE TABLE IF NOT EXISTS sourcing_decisions (
    decision_id    text        PRIMARY KEY,
    order_id       text        NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    trigger        text        NOT NULL,
    reason         text        NOT NULL DEFAULT '',
    rules_version  bigint      NOT NULL,
    line_ids       text[]      NOT NULL,
    sourced        boolean     NOT NULL,
    -- What the engine saw (request and candidate snapshot) and what it decided, explained.
    request        jsonb       NOT NULL,
    candidates     jsonb       NOT NULL,
    decision       jsonb       NOT NULL,
    promised_at    timestamptz,
    decided_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sourcing_decisions_by_order ON sourcing_decisions (order_id, decided_at);
CREATE INDEX IF NOT EXISTS sourcing_decisions_placed ON sourcing_decisions (decided_at DESC)
    WHERE trigger = 'order_placed';

-- Idempotency of fulfilment updates that carry an update_id.
CREATE TABLE IF NOT EXISTS fulfilment_updates (
    order_id    text        NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    update_id   text        NOT NULL,
    handled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, update_id)
);
