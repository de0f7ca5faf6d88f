"""fleetplane: a self-hosted control plane for fleets of AI agent runtimes."""
