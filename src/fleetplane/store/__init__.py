"""Persistence: tables, engine setup and queries; one code path for SQLite and PostgreSQL."""
