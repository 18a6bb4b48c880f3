"""Tracking's transports."""
