"""`memloss demo`: TRADES vs MemLoss+TRADES on digits with the same seed and budget, evaluated and compared."""
