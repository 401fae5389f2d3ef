"""The aliases of a registered model, and how promote and rollback change them all or nothing.

All or nothing: promote and rollback change up to three aliases and a few version tags, one MLflow
request each, and MLflow has no transaction across them. Each change is therefore written ahead as a
journal: ONE registered-model tag, "alias_journal" (JSON: the operation, the aliases before and after,
the version tags to set, when and which pid), written before anything else. That single write is the
commit point. Then the version tags are set, the aliases moved, and the journal tag deleted. A writer
killed before the journal write has changed nothing; killed after it, the change is decided and the
next writer (register, promote or rollback, under the lock, before it reads anything) completes it from
the journal (idempotently, from whatever point it stopped) and says so with a warning. Every reader in
the project (`aliases_of`, hence `list_versions`, `registry list`, the gate step's champion_after and
the writers' own decisions) resolves through the journal: while one is present it reports the journal's
after-state (and its version tags), so it sees the aliases exactly as before or exactly as after, never
a mix.

Order of the alias writes (`_alias_writes`), for readers that read MLflow directly: first remove the
aliases the change drops and any that names the new champion (the challenger on a promotion, previous
on a rollback), then move champion, then set the others. So champion moves in exactly one write (a
single alias write is atomic: models:/NAME@champion resolves to the old or the new champion, never a
third), and no write puts champion on the version of challenger or previous. What a direct reader can
see in between: a promotion without its challenger alias (a first promotion: for one write no alias at
all) and, for one write, the new champion beside the old previous; a rollback without its previous alias.
Writing previous := old champion first instead would leave champion == previous for a write, and
setting champion before removing the challenger would leave champion == challenger.

Fault injection (tests only): with $OMNIRETRIEVER_REGISTRY_KILL_AFTER=n the process SIGKILLs itself
right after its n-th registry write (`count_write`), so tests can stop a writer at every point.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from model.errors import OmniRetrieverError

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
MANAGED = (CHAMPION, CHALLENGER, PREVIOUS)  # the aliases a journal covers
JOURNAL_TAG = "alias_journal"  # the registered-model tag holding a promotion or rollback under way
KILL_AFTER_ENV = "OMNIRETRIEVER_REGISTRY_KILL_AFTER"  # SIGKILL after this many registry writes (to test kills)


class RegistryError(OmniRetrieverError, ValueError):
    """A registry request that cannot be carried out; the registry is left as it was."""


def aliases_of(mlflow_client: "MlflowClient", name: str) -> dict[str, str]:
    """alias -> version of a registered model, as readers see it: through a journal left by a promotion or
    rollback under way (or killed), i.e. its after-state (see the module docstring)."""
    return resolved_aliases(mlflow_client.get_registered_model(name))


def raw_aliases(registered_model) -> dict[str, str]:
    """alias -> version as stored, journal or not."""
    return {alias: str(version) for alias, version in (registered_model.aliases or {}).items()}


def resolved_aliases(registered_model) -> dict[str, str]:
    """The stored aliases with the managed ones replaced by a pending journal's after-state, if any."""
    aliases = raw_aliases(registered_model)
    journal = journal_of(registered_model)
    if journal is None:
        return aliases
    return {**{a: v for a, v in aliases.items() if a not in MANAGED}, **journal.after}



@dataclass
class Journal:
    """A promotion or rollback decided and committed but maybe not yet applied: the registered-model tag
    JOURNAL_TAG. `before` and `after` map the managed aliases to versions (an absent alias is absent)."""

    operation: str  # "promote" | "rollback"
    before: dict[str, str]
    after: dict[str, str]
    version_tags: dict[str, dict[str, str]]  # version -> {tag: value}, set before the aliases move
    time: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    pid: int = field(default_factory=os.getpid)

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def describe(self) -> str:
        return f"started {self.time} by pid {self.pid}: {show(self.before)} -> {show(self.after)}"


def show(aliases: dict[str, str]) -> str:
    return ", ".join(f"{a}=v{aliases[a]}" for a in MANAGED if a in aliases) or "no aliases"


def journal_of(registered_model) -> Journal | None:
    """The journal a registered model holds, or None; RegistryError if its tag is not one."""
    text = (registered_model.tags or {}).get(JOURNAL_TAG)
    if text is None:
        return None
    try:
        data = json.loads(text)
        journal = Journal(operation=str(data["operation"]), before=_alias_map(data["before"]),
                          after=_alias_map(data["after"]), time=str(data.get("time", "")), pid=int(data.get("pid", 0)),
                          version_tags={str(v): {str(k): str(x) for k, x in tags.items()}
                                        for v, tags in dict(data.get("version_tags") or {}).items()})
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise RegistryError(f"{registered_model.name!r} holds a registered-model tag {JOURNAL_TAG!r} that is not a "
                            f"journal ({type(exc).__name__}: {exc}): {text[:200]!r}; set the aliases by hand and delete "
                            "the tag") from None
    return journal


def _alias_map(value) -> dict[str, str]:
    out = {str(k): str(v) for k, v in dict(value).items()}
    if set(out) - set(MANAGED):
        raise ValueError(f"unexpected aliases {sorted(set(out) - set(MANAGED))}")
    return out


def managed(aliases: dict[str, str]) -> dict[str, str]:
    return {a: aliases[a] for a in MANAGED if a in aliases}


def check_state(name: str, aliases: dict[str, str], doing: str) -> None:
    """Refuse a change whose result would give champion the version of challenger or previous."""
    champion = aliases.get(CHAMPION)
    for other in (CHALLENGER, PREVIOUS):
        if champion is not None and aliases.get(other) == champion:
            raise RegistryError(f"{doing} would leave alias {CHAMPION!r} and alias {other!r} of {name!r} both on version "
                                f"{champion} ({show(aliases)}); nothing was changed")


def _alias_writes(current: dict[str, str], after: dict[str, str]) -> list[tuple[str, str | None]]:
    """The alias writes (alias, version; None deletes) that take the managed aliases from `current` to
    `after`: first the removals (aliases `after` drops, and any naming the new champion), then champion,
    then the others. Every state in between keeps champion apart from challenger and previous, and
    planning again from any of them gives the rest of the same sequence (so a rollforward can resume)."""
    state = managed(current)
    champion = after.get(CHAMPION)
    writes: list[tuple[str, str | None]] = []
    for alias in (CHALLENGER, PREVIOUS):
        if alias in state and (alias not in after or state[alias] == champion):
            writes.append((alias, None))
            del state[alias]
    if state.get(CHAMPION) != champion:
        writes.append((CHAMPION, champion))
    for alias in (CHALLENGER, PREVIOUS):
        if alias in after and state.get(alias) != after[alias]:
            writes.append((alias, after[alias]))
    return writes


writes_done = 0


def count_write() -> None:
    """Called after every registry write. Fault injection for tests: with $OMNIRETRIEVER_REGISTRY_KILL_AFTER=n
    the process SIGKILLs itself as soon as its n-th write is done (unset: nothing happens)."""
    global writes_done
    writes_done += 1
    limit = os.environ.get(KILL_AFTER_ENV)
    if not limit:
        return
    try:
        kill_at = int(limit)
    except ValueError:
        raise RegistryError(f"${KILL_AFTER_ENV}={limit!r} is not a number of writes") from None
    if writes_done == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def commit(mlflow_client: "MlflowClient", name: str, journal: Journal) -> None:
    """Write the journal (the commit point), then apply it."""
    check_state(name, journal.after, journal.operation)
    mlflow_client.set_registered_model_tag(name, JOURNAL_TAG, journal.dumps())
    count_write()
    _apply(mlflow_client, name, journal)


def _apply(mlflow_client: "MlflowClient", name: str, journal: Journal) -> None:
    """Carry out a committed journal from wherever it stands, check the result, delete the journal."""
    for version, tags in sorted(journal.version_tags.items()):
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(name, version, key, value)
            count_write()
    for alias, version in _alias_writes(raw_aliases(mlflow_client.get_registered_model(name)), journal.after):
        if version is None:
            mlflow_client.delete_registered_model_alias(name, alias)
        else:
            mlflow_client.set_registered_model_alias(name, alias, version)
        count_write()
    now = managed(raw_aliases(mlflow_client.get_registered_model(name)))
    if now != journal.after:
        raise RegistryError(f"aliases of {name!r} were changed by another writer during the {journal.operation}: now "
                            f"{show(now)}, expected {show(journal.after)}")
    mlflow_client.delete_registered_model_tag(name, JOURNAL_TAG)
    count_write()


def complete_interrupted(mlflow_client: "MlflowClient", name: str) -> Journal | None:
    """Under the lock, before deciding anything: finish a promotion or rollback a killed writer committed."""
    from mlflow.exceptions import MlflowException

    journal = journal_of(mlflow_client.get_registered_model(name))
    if journal is None:
        return None
    try:
        _apply(mlflow_client, name, journal)
    except MlflowException as exc:
        raise RegistryError(f"cannot complete the interrupted {journal.operation} of {name!r} ({journal.describe()}): "
                            f"{exc.message[:300]}; set the aliases by hand and delete the registered-model tag "
                            f"{JOURNAL_TAG!r}") from None
    log.warning("completed the interrupted %s of %r (%s)", journal.operation, name, journal.describe())
    return journal
