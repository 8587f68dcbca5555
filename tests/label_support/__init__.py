"""Helpers for the MONAI Label server tests (tests/test_label_*.py)."""
