"""`memloss compare`: a table of several runs' final and best metrics and evaluation results, seeds of one
configuration grouped as mean ± std, written as CSV/Markdown/JSON, and their curves in one figure."""
