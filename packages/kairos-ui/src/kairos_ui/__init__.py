"""Kairos UI: the NiceGUI admin app for a Kairos gateway."""

__version__ = "0.1.0"
