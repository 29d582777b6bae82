"""Device sources of the node agent: one pure parser per vendor tool, a Kubernetes source, a simulated one.

Every parser takes the tool's text output and returns a `Scan` (no I/O); running the tools is
exchange.agent.discovery's job. Garbage input raises SourceParseError (a named error), never anything else.
"""
