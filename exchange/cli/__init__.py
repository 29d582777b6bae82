"""The `hetex` command line: one module per group of verbs, each with `register(subparsers)`."""
