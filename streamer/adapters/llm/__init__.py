"""Summary models: OpenAI-compatible servers (vLLM) and the CPU baseline."""
