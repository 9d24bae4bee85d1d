"""AgentDojo's banking suite as a Keel domain: ``KEEL_DOMAIN=domains.agentdojo.banking:Banking``.

Everything else in this folder is data (``suite.yaml``, ``permissions.yaml``, ``contract.yaml``,
``corpus/``); the adapter is ``domains.agentdojo.domain``.
"""

from domains.agentdojo.domain import AgentDojoDomain


def Banking() -> AgentDojoDomain:
    return AgentDojoDomain("banking")
