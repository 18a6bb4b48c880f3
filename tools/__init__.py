"""Developer tooling: code generation, the local process supervisor, demo data."""
