"""hetex identifiers package."""
