"""The example domain: a customer-operations desk (CRM, billing, tickets, outbound e-mail).

``KEEL_DOMAIN=domains.support_desk:SupportDesk`` (the default) selects it. Its corpus, permission
manifest and eval scenarios live in this folder, where Keel's settings look for them.
"""

from pathlib import Path

from domains.support_desk.domain import SupportDesk

FOLDER = Path(__file__).resolve().parent
CORPUS = FOLDER / "corpus"
MANIFEST = FOLDER / "permissions.yaml"
SCENARIOS = FOLDER / "scenarios"
RETRIEVAL_QUESTIONS = FOLDER / "retrieval_questions.yaml"

__all__ = ["CORPUS", "MANIFEST", "RETRIEVAL_QUESTIONS", "SCENARIOS", "SupportDesk"]
