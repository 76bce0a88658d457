"""Entry points: the worker's faust surface, the read API, replay, and the CLI that runs them
(each built by the composition root, ``streamer/app.py``)."""
