"""Analyses of pipeline artifacts (semantic-ID tables, ...) that write reports, not models."""
