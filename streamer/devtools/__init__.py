"""Development tools: the model stand-in, the synthetic clickstream and test doubles.

Shipped in the distribution (the compose stack runs the stand-in) but never imported by the
runtime (checked by ``tests/unit/test_architecture.py``)."""
