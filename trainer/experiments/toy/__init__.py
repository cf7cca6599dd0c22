"""`memloss toy`: the paper's 2-D toy problem (§3.3, figures 2-3): data, model, training runs, results, plots."""
