"""AgentDojo's travel suite as a Keel domain: ``KEEL_DOMAIN=domains.agentdojo.travel:Travel``.

Everything else in this folder is data (``suite.yaml``, ``permissions.yaml``, ``contract.yaml``,
``corpus/``); the adapter is ``domains.agentdojo.domain``.
"""

from domains.agentdojo.domain import AgentDojoDomain


def Travel() -> AgentDojoDomain:
    return AgentDojoDomain("travel")
