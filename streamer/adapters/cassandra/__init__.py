"""Cassandra profile store and schema migrations."""
