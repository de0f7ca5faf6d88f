"""The HTTP API: app factory, dependencies, routers per surface, one error mapping."""
