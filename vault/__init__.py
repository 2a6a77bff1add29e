"""Keyhand's encrypted credential store. Knows nothing of MCP or HTTP routes; never imports gateway or tools."""
