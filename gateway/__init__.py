"""The public gRPC API of Tutti: authentication, authorization, rate limits and edge validation
in front of the backends, plus the `tutti` command-line client (gateway.cli)."""
