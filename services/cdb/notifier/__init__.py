"""notifier: alerts, breaker trips, fills, stale feeds and changes as messages (port 8006)."""
