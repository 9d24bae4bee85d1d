"""``keel new-domain NAME``: write a minimal working domain folder to make Keel yours.

The folder holds one read tool and one irreversible tool over a small SQLite backend (the part a
user replaces with their own API), a two-document corpus with one runbook, a permission
manifest, one eval scenario and the data the contract suite needs. As written it passes the
contract suite (``pytest tests/contract --keel-domain=NAME:Class``).

It is a command rather than a copier/cookiecutter template: Keel is cloned, not installed from a
template index, the files then live next to the two example domains, and the generator needs no
extra tool and works offline. The templates are plain files under ``keel/templates/domain``.
"""

from __future__ import annotations

import keyword
import re
import shutil
import tempfile
from datetime import date
from importlib.util import find_spec
from pathlib import Path
from string import Template

from keel.errors import BadRequest

TEMPLATE = Path(__file__).resolve().parent / "templates" / "domain"
_NAME = re.compile(r"^[a-z][a-z0-9_]{1,40}$")


def class_name(name: str) -> str:
    """The domain class a package name gets.

    Example:
        >>> class_name("order_desk")
        'OrderDesk'
    """
    return "".join(part.capitalize() for part in name.split("_") if part)


def new_domain(name: str, into: Path) -> tuple[Path, str]:
    """Write the domain ``name`` as a package folder under ``into``; its ``KEEL_DOMAIN`` value.

    The folder is written whole under a temporary name, then renamed into place: an interrupted
    run leaves nothing half-written, and an existing folder is never touched.

    Raises:
        BadRequest: the name is not a lowercase Python identifier, shadows a module Python can
            already import, or the folder exists.
    """
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise BadRequest(
            f"new-domain: {name!r} is not a lowercase Python package name (a-z, 0-9, _; "
            "starting with a letter), e.g. order_desk"
        )
    into = into.resolve()
    target = into / name
    if target.exists():
        raise BadRequest(f"new-domain: {target} exists; choose another name or remove it")
    package = into.name if (into / "__init__.py").is_file() else None
    module = f"{package}.{name}" if package else name
    if package is None and find_spec(name) is not None:
        raise BadRequest(f"new-domain: {name!r} is already an importable module; choose another")
    values = {
        "name": name, "module": module, "Class": class_name(name),
        "title": name.replace("_", " ").capitalize(), "words": name.replace("_", " "),
        "today": date.today().isoformat(),
    }  # fmt: skip
    into.mkdir(parents=True, exist_ok=True)
    draft = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=into))
    try:
        for source in sorted(TEMPLATE.rglob("*.tmpl")):
            out = draft / source.relative_to(TEMPLATE).with_suffix("")
            out.parent.mkdir(parents=True, exist_ok=True)
            text = Template(source.read_text(encoding="utf-8")).substitute(values)
            out.write_text(text, encoding="utf-8")
        draft.rename(target)
    except BaseException:
        shutil.rmtree(draft, ignore_errors=True)
        raise
    return target, f"{module}:{values['Class']}"
