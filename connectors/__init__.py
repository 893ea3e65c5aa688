"""Connectors: each module translates one system into eventflow events and acknowledgements."""
