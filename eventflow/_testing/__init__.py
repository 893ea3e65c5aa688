"""eventflow.testing's implementation: the harness, its run records, its sync form."""
