"""hetex federation package."""
