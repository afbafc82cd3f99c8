"""Safety: guards on input, output and the stream (blocklists, PII, external checkers), one policy."""
