"""`make bench`: convq measured against its baselines side by side (python -m bench)."""
