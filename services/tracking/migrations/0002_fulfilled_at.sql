-- When the promise to the customer was met (ready for collection or delivered): the on-time
-- KPI compares it with promised_at, while preparation time still ends at ready/shipped.
ALTER TABLE order_index ADD COLUMN IF NOT EXISTS fulfilled_at timestamptz;
