"""A module that prints when imported, as careless libraries do."""

print("noisy_module: imported, and printing to stdout")
PRINTED = True
