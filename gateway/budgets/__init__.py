"""Budgets: the policy file, the ledger that is the source of truth for spend, and its durable store."""
