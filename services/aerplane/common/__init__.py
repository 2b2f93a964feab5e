"""Plumbing shared by every service: settings base, Redis streams, ops HTTP server, processes, logging."""
