"""HTTP API: handlers parse, call one service, serialize."""
