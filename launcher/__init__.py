"""Starting and stopping the gateway on a local Ray: the `llm-gateway` command and the runtime it drives."""
