"""memstore.layout: the block layout of a store, the ring of its slots and the training order it serves (one part, or a base set plus generated images)."""
