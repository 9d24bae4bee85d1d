"""Permission manifests and their loader live here (not built yet: see the README)."""
