"""Keyhand's server: HTTP app, MCP surface, sessions, ledger, auth, admin, upstreams.

``gateway`` may import ``vault`` and ``tools``; they never import ``gateway``.
"""

__version__ = "0.1.0"
