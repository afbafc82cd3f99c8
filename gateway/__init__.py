"""LLM gateway core: schema, providers, pipeline and emulators. Imports no Ray."""
