"""Reusable builders for tests."""
