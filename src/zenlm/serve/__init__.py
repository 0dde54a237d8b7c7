"""OpenAI-compatible HTTP serving: routes (app), continuous batching (engine), playground."""

from zenlm.serve.app import ServeOptions, create_app

__all__ = ["ServeOptions", "create_app"]
