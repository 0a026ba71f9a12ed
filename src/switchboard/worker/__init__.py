"""Agent workers: run calls' pipelines, report load, drain on shutdown."""
