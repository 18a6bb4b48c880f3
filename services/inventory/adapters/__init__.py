"""Redis store (Lua scripts), outbox relay to Kafka, availability fan-out."""
