"""The agent as configured: its YAML config, per-number directory, intents, keypad digits and tools.

Pure configuration and the logic read off it, no pipeline: engines, telephony and the call
build on it, and it imports none of them.
"""
