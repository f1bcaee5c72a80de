"""Layer 1: pure tensor functions (no Lightning, no config objects)."""
