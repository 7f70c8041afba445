"""Records -> requests: the request builder, endpoints, images, preflight and plan."""
