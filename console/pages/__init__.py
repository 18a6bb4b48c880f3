"""One module per page: its routes, its gateway calls, its templates."""
