"""Application services: intake, scheduling, updating, rollback, and the one error policy.

They use the ports (``streamer/ports.py``) and the pure domain; adapters are chosen by the
composition root (``streamer/app.py``)."""
