"""Kafka adapters: record codec, dead-letter and change-event publishing, topic admin."""
