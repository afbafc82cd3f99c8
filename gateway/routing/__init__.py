"""Routing: the declarative policy, and the route plan a replica computes from it for each request."""
