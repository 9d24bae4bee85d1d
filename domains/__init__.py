"""Example domains: each folder is one business, plugged into Keel through the Domain seam."""
