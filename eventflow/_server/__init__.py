"""The REST API and web UI (`eventflow server`)."""

from ._app import create_app

__all__ = ["create_app"]
