"""The second example domain: an IT-operations incident desk, built through the seam only.

``KEEL_DOMAIN=domains.incident_desk:IncidentDesk`` selects it. Its corpus, permission manifest and
eval scenarios live in this folder, where Keel's settings look for them.
"""

from domains.incident_desk.domain import IncidentDesk

__all__ = ["IncidentDesk"]
