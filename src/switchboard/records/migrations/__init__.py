"""Alembic migrations of the call history, run at start-up (``upgrade head``)."""
