"""The training loop and what it owns: the session (data, model, optimizer, store), one epoch, one step, memory
examples and the deferred store write, augmentation with recorded views, metrics, progress and the run directory.
Entry point: `fit(cfg)`."""
