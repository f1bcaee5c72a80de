"""Layer 3: datasets, transforms and the data module."""
