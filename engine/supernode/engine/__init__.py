"""Supernode engine."""
