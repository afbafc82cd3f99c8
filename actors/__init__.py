"""Ray actor shells over the control plane's plain classes in `gateway.control` (DESIGN §2)."""
