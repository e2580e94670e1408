"""Reports built from finished studies."""
