"""Call records: history database, recordings, post-call webhooks."""
