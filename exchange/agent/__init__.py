"""`hetex agent`: the provider's node agent (device discovery, heartbeats, metered signed usage, journal)."""
