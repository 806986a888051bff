"""Test doubles of services we cannot run here (cloud metadata servers, ...), on 127.0.0.1."""
