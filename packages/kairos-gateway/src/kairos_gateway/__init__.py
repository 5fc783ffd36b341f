"""Kairos gateway."""
