"""The peer mesh: relays share live documents through NATS and JetStream."""
