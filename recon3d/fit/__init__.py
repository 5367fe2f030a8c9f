"""Fitting: the shared training loop and one module per method (sampler, loss, defaults)."""
