-- The replacement of an exchange handed over (collected at the store, or given to the carrier):
-- recorded by HandOverExchange once its reservation is fulfilled in inventory.
ALTER TABLE exchanges ADD COLUMN IF NOT EXISTS handed_over_at timestamptz;
ALTER TABLE exchanges ADD COLUMN IF NOT EXISTS handover_update_id text NOT NULL DEFAULT '';
