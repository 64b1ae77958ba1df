"""Fixtures for the pools tests."""
