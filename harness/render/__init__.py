"""Renderers: pure functions from a resolved lab to configuration files."""
