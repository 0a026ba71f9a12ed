"""Metrics and logging shared by every process role."""
