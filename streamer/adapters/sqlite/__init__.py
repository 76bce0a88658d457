"""Embedded SQLite profile store (demo and laptops)."""
