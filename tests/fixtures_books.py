"""Fixtures for the books tests."""
