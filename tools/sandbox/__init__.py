"""Sandbox protocol and backends (bubblewrap by default)."""
