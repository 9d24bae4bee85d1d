"""AgentDojo's task suites as Keel domains, through one generic adapter (``domain``).

Each suite with a folder here (``banking/``, ``slack/``, ``travel/``) brings data only; any other
installed suite runs on the adapter's defaults (``domain.default_manifest``).
"""
