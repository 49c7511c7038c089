"""What the service tells its operators: JSON logs (`logs`) and Prometheus metrics
(`prometheus`). A leaf: imports nothing else from the service."""
