"""Provisioners: backends that bring machines to ready state (lab containers today)."""
