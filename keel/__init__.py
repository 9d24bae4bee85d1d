"""Keel's cross-cutting pieces: settings, the error hierarchy, and the `keel` command line."""
