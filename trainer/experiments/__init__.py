"""Whole experiments built from the training and evaluation layers: the paper's 2-D toy problem (`toy`) and the
CPU demo that compares TRADES with MemLoss+TRADES on digits (`demo`)."""
