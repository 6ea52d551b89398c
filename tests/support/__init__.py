"""Shared helpers for the test suites: relay processes, raw clients, settings."""
