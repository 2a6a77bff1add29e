"""Keyhand's built-in tools and the sandbox. Never imports gateway or vault."""
