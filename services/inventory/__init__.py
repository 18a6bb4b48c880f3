"""Inventory: one real-time stock view across warehouses, stores and suppliers, on Redis."""
