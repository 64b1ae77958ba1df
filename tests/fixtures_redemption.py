"""Fixtures for the redemption tests."""
