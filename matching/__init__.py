"""hetex matching package."""
