"""The whole suite on one machine: `make run` (processes) for trying it out and for end-to-end tests."""
