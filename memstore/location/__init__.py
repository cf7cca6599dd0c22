"""memstore.location: where a store lives: paths and URLs, their storage options, and the zarr Store opened for them."""
