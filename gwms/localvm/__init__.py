"""Local instances: stand-ins for cloud VMs on this host (their metadata servers, ...)."""
