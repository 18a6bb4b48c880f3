"""The pure inventory model: no gRPC, Redis or Kafka here, only rules and state."""
