"""The shared runtime of every Tutti service: settings, gRPC server bootstrap,
error mapping, Kafka and PostgreSQL plumbing, telemetry. No business rules live here."""
