"""The standing benchmark suite: scripts run as `python bench/NAME.py` (see bench/README.md)."""
