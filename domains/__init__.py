"""Keel's example domains, each one folder chosen by ``KEEL_DOMAIN``; the machinery imports none."""
