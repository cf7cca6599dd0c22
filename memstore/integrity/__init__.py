"""memstore.integrity: what keeps a store whole: the writer lock, the per-epoch manifests and their checks, repair."""
