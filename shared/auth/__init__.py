"""Who may call: bearer tokens with roles, and what each route declares about its callers."""
