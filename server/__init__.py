"""Trustpoint enrollment service."""
