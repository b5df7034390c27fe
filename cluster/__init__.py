"""The training driver (the `ray job submit` entrypoint) and the wiring of the roles."""
