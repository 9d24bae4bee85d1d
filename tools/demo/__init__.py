"""The example domain: a customer-operations desk. Replace this folder to make Keel yours."""

from tools.demo.domain import DemoDomain

__all__ = ["DemoDomain"]
