"""Tracking: the timestamped trail of every order and live KPIs, built from every event stream."""
