"""Verification: static checks, NeMo reference outputs, parity figures, gates and on-device checks."""
