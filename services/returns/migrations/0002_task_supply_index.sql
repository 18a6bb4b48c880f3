-- Finding the newer incoming-supply task of the same supply (superseded tasks are retired).
CREATE INDEX IF NOT EXISTS inventory_tasks_by_supply ON inventory_tasks (supply_id, location_id, created_at)
    WHERE supply_id <> '';
