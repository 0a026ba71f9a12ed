"""The orchestrator: stateless webhook handling and call placement across the worker pool."""
