"""Kairos core."""
