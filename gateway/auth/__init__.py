"""Caller identity: gateway API keys, JWT callers, the principal a request runs as, and the audit of every decision."""
