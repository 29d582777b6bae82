"""hetex exchange package."""
