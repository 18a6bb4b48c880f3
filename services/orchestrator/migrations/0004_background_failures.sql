-- Background work that failed (today: re-sourcing orders not accepted in time), by kind and key.
-- A transient failure waits for next_attempt_at (exponential backoff with jitter); a permanent
-- one (inventory refused: unknown SKU or location…) is parked: skipped by the sweep, listed by
-- ListParkedTasks and retried only by RetryParkedTask. The row goes once the work succeeds.
CREATE TABLE IF NOT EXISTS background_failures (
    kind            text        NOT NULL,
    key             text        NOT NULL,
    order_id        text        NOT NULL,
    location_id     text        NOT NULL DEFAULT '',
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text        NOT NULL DEFAULT '',
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    parked_at       timestamptz,
    PRIMARY KEY (kind, key)
);
