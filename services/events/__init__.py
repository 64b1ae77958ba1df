"""The events service: gathers the owning services' outboxes, streams events, delivers them (docs/events.md)."""
