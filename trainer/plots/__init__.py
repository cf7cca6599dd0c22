"""Figures: one style for every figure memloss draws (trainer/plots/style.py) and the figures of the store, the
training curves, the sweep and the run comparison. Nothing here imports torch; matplotlib is imported on use."""
