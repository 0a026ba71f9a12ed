"""Dispatch through Redis: the job stream, the worker registry, capacity and call state."""
