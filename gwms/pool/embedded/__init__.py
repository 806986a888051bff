"""The embedded collector + schedd: SQLite store, HTTP server, HTTP clients."""
