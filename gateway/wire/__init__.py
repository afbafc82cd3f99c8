"""Inbound wire formats: the OpenAI-compatible API and the native streaming API, encoded at the edge."""
