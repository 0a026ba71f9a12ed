"""The call: its typed log (:mod:`.log`), and soon its one admission and context.

Modules here are imported by path (``switchboard.call.log``), not re-exported, so that a lower
layer appending to a call's log does not import the layers that run calls.
"""
