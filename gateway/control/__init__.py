"""The control plane's plain classes: what the Router and provider actors hold, and what a replica keeps locally."""
