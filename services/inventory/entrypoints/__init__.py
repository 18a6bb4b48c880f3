"""gRPC entrypoint of the inventory service."""
