"""Datasets (both seed layouts, bundled digits), transforms and loaders."""
