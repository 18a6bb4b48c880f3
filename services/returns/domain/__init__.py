"""The pure returns model: no gRPC, PostgreSQL or Kafka here, only rules and state."""
