"""The call: one admission (``ticket``, ``host``), one context, the runner, and its conversation.

The conversation (:mod:`.conversation`) is the Pipecat graph of one call and its call control.
The call's typed log is :mod:`switchboard.call_log`, below every layer that appends to it.
Modules here are imported by path, not re-exported.
"""
