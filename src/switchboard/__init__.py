"""Switchboard: answer phone calls with AI voice agents."""

__version__ = "0.1.0"
