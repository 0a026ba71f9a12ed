"""Testing an agent before callers do: scenario suites run by simulated callers, and recorded
calls replayed against a new build (``switchboard test``, ``switchboard replay``)."""
