"""PII detection and redaction: what a call's record, webhook, analysis, logs and recording never keep."""
