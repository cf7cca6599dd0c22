"""memstore.zarrstore: the Zarr backend: arrays and attributes, whole-chunk I/O and codecs, windows, resident rows, prefetch and write-behind threads."""
