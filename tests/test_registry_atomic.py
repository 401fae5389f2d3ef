"""Promotion and rollback are all or nothing: the real CLI process, SIGKILLed right after each of its
registry writes ($OMNIRETRIEVER_REGISTRY_KILL_AFTER), leaves aliases that never put champion beside
challenger or previous, readers see exactly the after-state while the journal is left, and the next
writer completes it (saying so); plus the refused requests that would lose `previous`.

Versions are made directly in the registry with evaluation tags (no model artifacts: promote and
rollback only read tags), each later one better on every direction, so every promotion passes the gate."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

import registry.aliases as aliases_mod
from omniretriever.cli import app
from registry.registry import (CHALLENGER, CHAMPION, GATE_METRICS, JOURNAL_TAG, KILL_AFTER_ENV, PREVIOUS, RegistryError,
                               aliases_of, journal_of, list_versions, promote, rollback)
from registry.store import client, configure
from tests.mlflow_helpers import registry_state, sqlite_uri

runner = CliRunner()
C, X, P = CHAMPION, CHALLENGER, PREVIOUS


@dataclass(frozen=True)
class Scenario:
    """A registered model as `aliases` and `tags` make it, the command run on it, and what each write leaves."""

    name: str
    versions: int
    aliases: dict[str, str]
    tags: dict[str, dict[str, str]]  # version -> tags beyond the evaluation
    command: str  # promote | rollback
    after: dict[str, str]
    raw: tuple[dict[str, str], ...]  # the stored aliases after write k = 1..N (N = len(raw))
    next_command: str  # the writer run after the kill
    next_code: int
    final: dict[str, str]  # the aliases after it
    tagged: tuple[str, str, str]  # (version, tag, value) the completed change must have set ("*": any value)


SCENARIOS = [
    # journal, 3 version tags, challenger removed, champion set, journal deleted
    Scenario("promote-first", 1, {X: "1"}, {}, "promote", {C: "1"},
             (*[{X: "1"}] * 4, {}, {C: "1"}, {C: "1"}),
             "promote", 2, {C: "1"}, ("1", "previous_champion", "none")),
    # journal, 3 version tags, challenger removed, champion set, previous set, journal deleted
    Scenario("promote-over-champion", 2, {C: "1", X: "2"}, {}, "promote", {C: "2", P: "1"},
             (*[{C: "1", X: "2"}] * 4, {C: "1"}, {C: "2"}, {C: "2", P: "1"}, {C: "2", P: "1"}),
             "rollback", 0, {C: "1"}, ("2", "previous_champion", "1")),
    Scenario("promote-with-previous", 3, {P: "1", C: "2", X: "3"}, {"2": {"previous_champion": "1"}}, "promote",
             {C: "3", P: "2"},
             (*[{P: "1", C: "2", X: "3"}] * 4, {C: "2", P: "1"}, {C: "3", P: "1"}, {C: "3", P: "2"}, {C: "3", P: "2"}),
             "rollback", 0, {C: "2", P: "1"}, ("3", "previous_champion", "2")),
    # journal, 1 version tag (rolled_back_at on the champion), previous removed, champion set, previous set, journal deleted
    Scenario("rollback-chain", 4, {P: "2", C: "3", X: "4"}, {"2": {"previous_champion": "1"}, "3": {"previous_champion": "2"}},
             "rollback", {C: "2", P: "1", X: "4"},
             (*[{P: "2", C: "3", X: "4"}] * 2, {C: "3", X: "4"}, {C: "2", X: "4"}, {C: "2", P: "1", X: "4"},
              {C: "2", P: "1", X: "4"}),
             "rollback", 0, {C: "1", X: "4"}, ("3", "rolled_back_at", "*")),
    Scenario("rollback-to-first", 2, {P: "1", C: "2"}, {"1": {"previous_champion": "none"}, "2": {"previous_champion": "1"}},
             "rollback", {C: "1"},
             (*[{P: "1", C: "2"}] * 2, {C: "2"}, {C: "1"}, {C: "1"}),
             "rollback", 2, {C: "1"}, ("2", "rolled_back_at", "*")),
]
BY_NAME = {s.name: s for s in SCENARIOS}
CASES = [(s.name, k) for s in SCENARIOS for k in range(1, len(s.raw) + 1)]


def evaluation_tags(version: int) -> dict[str, str]:
    """Tags as `register` writes them; version n scores 10 n R@1 everywhere (each later one passes the gate)."""
    return {**{k: repr(10.0 * version) for k in GATE_METRICS}, "split": "test", "n_items": "24", "run_id": f"run{version}"}


def make_model(uri: str, name: str, versions: int, aliases: dict[str, str],
               tags: dict[str, dict[str, str]] | None = None) -> None:
    mlflow_client = client(uri)
    mlflow_client.create_registered_model(name)
    for n in range(1, versions + 1):
        mlflow_client.create_model_version(name, source=f"file:///nonexistent/{name}/{n}",
                                           tags={**evaluation_tags(n), **(tags or {}).get(str(n), {})})
    for alias, version in aliases.items():
        mlflow_client.set_registered_model_alias(name, alias, version)


def stored(uri: str, name: str) -> tuple[dict[str, str], bool]:
    """(the aliases as stored, whether a journal is left)."""
    rm = client(uri).get_registered_model(name)
    return {a: str(v) for a, v in (rm.aliases or {}).items()}, JOURNAL_TAG in (rm.tags or {})


def assert_invariants(aliases: dict[str, str]) -> None:
    if C in aliases:
        assert aliases.get(X) != aliases[C] and aliases.get(P) != aliases[C], aliases


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "omniretriever", "registry", *args]


@pytest.fixture(autouse=True, scope="module")
def _session_uri() -> str:
    return os.environ["MLFLOW_TRACKING_URI"]


@pytest.fixture(autouse=True)
def _session_store_kept(_session_uri):
    """Every store here is named explicitly, but client(uri) also points mlflow (and $MLFLOW_TRACKING_URI) at
    it: after each test the store in force before this module is put back."""
    yield
    configure(_session_uri)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One sqlite store holding every scenario's registered model as it starts."""
    root = tmp_path_factory.mktemp("atomic-template")
    uri = sqlite_uri(root)
    for s in SCENARIOS:
        make_model(uri, s.name, s.versions, s.aliases, s.tags)
    return root / "mlflow.db"


def copy_store(template: Path, directory: Path) -> str:
    directory.mkdir(parents=True)
    with sqlite3.connect(template) as src, sqlite3.connect(directory / "mlflow.db") as dst:
        src.backup(dst)
    return sqlite_uri(directory)


# Starting `python -m omniretriever` costs about 2 s of importing (mlflow) per case; this forks each case's
# process from one interpreter that has imported the console script, then runs its entry point,
# omniretriever.cli.main, with the case's arguments and environment, its output in a log file. The
# process is killed by the registry's own hook, as a plain `omniretriever` would be.
FORK_SERVER = textwrap.dedent("""
    import json, os, sys, time, traceback
    import mlflow.store.model_registry.sqlalchemy_store, mlflow.store.tracking.sqlalchemy_store
    from omniretriever.cli import main

    cases, workers, running = [json.loads(line) for line in sys.stdin], int(sys.argv[1]), {}

    def reap():
        pid, status = os.wait()
        case, start = running.pop(pid)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"id": case["id"], "status": code, "seconds": time.monotonic() - start}), flush=True)

    for case in cases:
        while len(running) >= workers:
            reap()
        start, pid = time.monotonic(), os.fork()
        if pid == 0:
            os.environ.update(case["env"])
            log = os.open(case["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(log, 1)
            os.dup2(log, 2)
            try:
                main(case["args"])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        running[pid] = (case, start)
    while running:
        reap()
""")


@pytest.fixture(scope="module")
def killed(template, tmp_path_factory) -> dict[tuple[str, int], tuple[str, float]]:
    """Every case's command, killed after its k-th write, two or more at a time: (name, k) -> (its store, s)."""
    root = tmp_path_factory.mktemp("atomic-cases")
    stores = {case: copy_store(template, root / f"{case[0]}-{case[1]}") for case in CASES}
    requests = [{"id": i, "args": ["registry", BY_NAME[name].command, "--name", name, "--tracking-uri", stores[(name, k)]],
                 "env": {KILL_AFTER_ENV: str(k)}, "log": str(root / f"{name}-{k}.log")} for i, (name, k) in enumerate(CASES)]
    proc = subprocess.run([sys.executable, "-c", FORK_SERVER, str(max(2, os.cpu_count() or 2))], capture_output=True,
                          text=True, timeout=600, input="".join(json.dumps(r) + "\n" for r in requests))
    assert proc.returncode == 0, proc.stderr
    done = {r["id"]: r for r in map(json.loads, proc.stdout.splitlines())}
    for i, case in enumerate(CASES):
        assert done[i]["status"] == -9, (case, done[i], Path(requests[i]["log"]).read_text())
    return {case: (stores[case], done[i]["seconds"]) for i, case in enumerate(CASES)}


@pytest.mark.parametrize("name,k", CASES, ids=[f"{n}-kill-after-{k}" for n, k in CASES])
def test_killed_after_each_write_is_completed_by_the_next_writer(killed, name, k):
    s = BY_NAME[name]
    uri, seconds = killed[(name, k)]
    raw, journal_left = stored(uri, name)
    assert raw == s.raw[k - 1]  # exactly the planned intermediate state
    assert_invariants(raw)
    assert journal_left is (k < len(s.raw))  # the last write deletes the journal

    # readers: exactly the after-state (the journal is written first, so every kill point is past the commit)
    assert {a: v for a, v in aliases_of(client(uri), name).items()} == s.after
    version, tag, value = s.tagged
    listed = {v.version: v for v in list_versions(name, tracking_uri=uri)}
    assert {a: v.version for v in listed.values() for a in v.aliases} == s.after
    assert tag in listed[version].tags and value in ("*", listed[version].tags[tag])
    shown = runner.invoke(app, ["registry", "list", "--name", name, "--tracking-uri", uri])
    assert shown.exit_code == 0, shown.output
    assert ("is not finished (killed, or still running)" in shown.output) is journal_left, shown.output
    assert stored(uri, name) == (raw, journal_left)  # reading wrote nothing

    # the next writer completes the change first, says so, then does its own work
    nxt = runner.invoke(app, ["registry", s.next_command, "--name", name, "--tracking-uri", uri])
    assert nxt.exit_code == s.next_code, nxt.output
    assert (f"warning: completed the interrupted {s.command} of {name!r}" in nxt.output) is journal_left, nxt.output
    final, journal_left_after = stored(uri, name)
    assert not journal_left_after and final == s.final
    assert_invariants(final)
    tags = client(uri).get_model_version(name, version).tags
    assert tag in tags and value in ("*", tags[tag])
    print(f"{s.command:8} {name:22} kill after write {k}/{len(s.raw)} ({seconds:.1f} s): left {_show(raw)}"
          f"{' + journal' if journal_left else ''}; readers saw {_show(s.after)}; after `{s.next_command}` "
          f"{_show(final)}; invariants OK")


def _show(aliases: dict[str, str]) -> str:
    return "{" + ", ".join(f"{a}={aliases[a]}" for a in (C, X, P) if a in aliases) + "}"


@pytest.mark.parametrize("s", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_uninterrupted_change_makes_exactly_the_planned_writes(template, tmp_path, s):
    """The matrix covers every write: an uninterrupted run makes exactly N of them and ends in the after-state."""
    uri = copy_store(template, tmp_path / "store")
    before = aliases_mod.writes_done
    (promote if s.command == "promote" else rollback)(s.name, tracking_uri=uri)
    assert aliases_mod.writes_done - before == len(s.raw)
    assert stored(uri, s.name) == (s.after, False)


def test_a_register_completes_an_interrupted_promote(tracked_run):
    """register is a writer too: it completes the journal before it adds its challenger."""
    from registry.run_record import read_record

    run_dir, run_id = tracked_run
    uri, name = read_record(run_dir)["tracking_uri"], "atomic-register"  # the store the run was tracked in
    make_model(uri, name, 2, {C: "1", X: "2"})
    proc = subprocess.run(cli("promote", "--name", name, "--tracking-uri", uri), capture_output=True, text=True,
                          timeout=240, env={**os.environ, KILL_AFTER_ENV: "6"})  # champion moved, previous not yet set
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert stored(uri, name) == ({C: "2"}, True)
    res = runner.invoke(app, ["registry", "register", run_id, "--name", name, "--tracking-uri", uri])
    assert res.exit_code == 0 and "warning: completed the interrupted promote of 'atomic-register'" in res.output, res.output
    assert stored(uri, name) == ({C: "2", P: "1", X: "3"}, False)


# ---------------------------------------------------------------------------------------------------
# requests that would lose `previous`: refused, nothing written


def test_a_challenger_that_is_the_champion_is_refused(template, tmp_path):
    uri, name = copy_store(template, tmp_path / "store"), "atomic-same-challenger"
    make_model(uri, name, 2, {P: "1", C: "2"}, {"2": {"previous_champion": "1"}})
    client(uri).set_registered_model_alias(name, X, "2")  # set by hand to the champion's version
    before = registry_state(uri)
    res = runner.invoke(app, ["registry", "promote", "--name", name, "--tracking-uri", uri])
    assert res.exit_code == 2, res.output
    assert ("alias 'challenger' and alias 'champion' of 'atomic-same-challenger' both point to version 2"
            in " ".join(res.output.split())), res.output
    with pytest.raises(RegistryError, match="both point to version 2: it already is the champion"):
        promote(name, tracking_uri=uri)
    assert registry_state(uri) == before and journal_of(client(uri).get_registered_model(name)) is None
    assert rollback(name, tracking_uri=uri) == "1"  # previous was not lost


def test_a_rollback_to_the_champion_itself_is_refused(template, tmp_path):
    uri, name = copy_store(template, tmp_path / "store"), "atomic-same-previous"
    make_model(uri, name, 2, {C: "2", P: "2"})
    before = registry_state(uri)
    res = runner.invoke(app, ["registry", "rollback", "--name", name, "--tracking-uri", uri])
    assert res.exit_code == 2, res.output
    assert ("alias 'previous' and alias 'champion' of 'atomic-same-previous' both point to version 2"
            in " ".join(res.output.split())), res.output
    assert registry_state(uri) == before and journal_of(client(uri).get_registered_model(name)) is None


@pytest.mark.parametrize("aliases,command,message", [
    ({X: "1", P: "1"}, promote, "promoting v1 would leave alias 'champion' and alias 'previous'"),
    ({C: "2", P: "1", X: "1"}, rollback, "rolling back to v1 would leave alias 'champion' and alias 'challenger'"),
], ids=["promote-onto-previous-without-champion", "rollback-onto-challenger"])
def test_changes_that_would_pair_champion_with_another_alias_are_refused(template, tmp_path, aliases, command, message):
    uri, name = copy_store(template, tmp_path / "store"), f"atomic-pair-{command.__name__}"
    make_model(uri, name, 2, aliases)
    before = registry_state(uri)
    with pytest.raises(RegistryError, match=message):
        command(name, tracking_uri=uri)
    assert registry_state(uri) == before


def test_a_bad_kill_hook_value_is_refused(monkeypatch):
    monkeypatch.setenv(KILL_AFTER_ENV, "soon")
    with pytest.raises(RegistryError, match="is not a number of writes"):
        aliases_mod.count_write()
