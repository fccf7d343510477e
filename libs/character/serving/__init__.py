"""Serving trained personas: resolving model names, the engine pool, the OpenAI-compatible server."""
