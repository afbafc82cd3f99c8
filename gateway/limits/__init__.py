"""Rate limits per key, org and user: token buckets owned by the control plane, leased to replicas."""
