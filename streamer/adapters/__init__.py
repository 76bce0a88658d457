"""Adapters: implementations of the ports against real technology."""
