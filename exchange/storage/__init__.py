"""Storage: SQLAlchemy models per stage, the async engine, and migrations."""
