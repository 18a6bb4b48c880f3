-- A PlaceOrder between its reservation and its commit. Written (and committed) before inventory
-- is asked to reserve, deleted in the transaction that records the order: a row that outlives
-- its call is a process that died in between, and the sweeper gives its stock back.
-- `generation` picks the reservation ids, so a retry after such a release holds fresh ones.
CREATE TABLE IF NOT EXISTS placements (
    order_id     text        PRIMARY KEY,
    generation   integer     NOT NULL DEFAULT 1,
    started_at   timestamptz NOT NULL,
    released_at  timestamptz
);
CREATE INDEX IF NOT EXISTS placements_open ON placements (started_at) WHERE released_at IS NULL;
