"""Tracking's adapters: PostgreSQL store and notifications, protobuf event decoding."""
