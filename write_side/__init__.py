"""Command services: one package per service, plus the shared kernel."""
