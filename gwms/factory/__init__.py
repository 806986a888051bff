"""The glidein factory: entries, request handling, provisioning, state journal, web service."""
