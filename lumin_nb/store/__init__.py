"""The durable event store (placeholder until the store lands)."""
