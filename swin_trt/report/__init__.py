"""HTML report."""
