"""memstore.inspection: a store summarized for people: `memloss inspect-store` and the distributions its figure draws."""
