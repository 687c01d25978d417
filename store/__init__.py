"""The store: participants, jobs, outputs, movements, flows (sqlmodel + aiosqlite)."""
