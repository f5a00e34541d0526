"""Settings: one validated class per service, read from the environment at startup."""
