"""One module per page; each has ``register(settings, gateway)`` that adds its route."""
