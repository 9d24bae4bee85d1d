"""Evals: suites that measure each piece of Keel's scaffolding and print numbers.

One runner (``evals.runner``) with one registry of suites; ``keel eval --suite NAME`` runs one.
"""
