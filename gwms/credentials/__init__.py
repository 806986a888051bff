"""Credentials: X.509 proxies, sealing to the factory key, and the credential model."""
