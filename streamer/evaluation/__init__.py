"""The offline evaluation of the paper (``streamer eval``): a second product beside the service.

The runtime never imports it; only the composition root loads it, on demand."""
