-- Tasks inventory refused permanently (NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION…) are
-- parked with their reason: not retried by the worker, listed to operators, retried on demand.
ALTER TABLE inventory_tasks ADD COLUMN IF NOT EXISTS parked_at timestamptz;
CREATE INDEX IF NOT EXISTS inventory_tasks_parked ON inventory_tasks (parked_at) WHERE parked_at IS NOT NULL;
