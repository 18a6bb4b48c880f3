-- Outbox rows Kafka refuses for good (too large, an invalid topic, a corrupt record) are parked:
-- skipped by the relay so the rows behind them go on, listed by the owning service's
-- ListParkedTasks, relayed again on RetryParkedTask.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS parked_at timestamptz;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS parked_reason text NOT NULL DEFAULT '';
