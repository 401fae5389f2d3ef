"""Starting and stopping the local endpoint: Ctrl-C or SIGTERM stops both servers however `serve` was started,
a server that dies or fails to start takes every process of the run with it, and a killed run's work directory
is removed by the next start."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from serving.index import load_index, save_index
from serving.launcher import WORKDIR_PREFIX, LocalEndpoint, ServingError, _Server, make_workdir, remove_abandoned_workdirs
from tests.conftest import free_port, http_ok, wait_until


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children of children included), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    def ready() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else proc.returncode
        return http_ok(url)

    wait_until(ready, timeout, f"{url} not ready after {timeout} s", interval=0.5)


def none_alive(pids: Callable[[], set[int]], timeout: float = 30) -> None:
    """Wait until no process of `pids()` is alive (the kernel reaps stopped servers shortly after they exit)."""
    def left() -> list[int]:
        return sorted(p for p in pids() if alive(p))

    wait_until(lambda: not left(), timeout, lambda: f"still alive after {timeout} s: {left()}")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def named(pids: set[int], part: str) -> set[int]:
    return {p for p in pids if part in cmdline(p)}


def naming(*paths: Path) -> set[int]:
    """The live processes whose command line names one of `paths` (a run's temp root, its model repository)."""
    return {int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and alive(int(e.name))
            and any(str(p) in cmdline(int(e.name)) for p in paths)}


def serve(repo: Path, tmp_root: Path, ignored: tuple[int, ...] = (), *options: str) -> tuple[subprocess.Popen, str]:
    """`omniretriever serve` on free ports with its temp root in `tmp_root`, started with the signals `ignored`
    ignored (as a background job of a script gets SIGINT) and the others at their defaults; (it, its ready URL)."""
    http_port, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "omniretriever", "serve", "--repo", str(repo), "--http-port", str(http_port),
            "--grpc-port", str(grpc_port), *options]

    def dispositions() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_root)}, preexec_fn=dispositions)
    return proc, f"http://127.0.0.1:{http_port}/v2/models/omniretriever/ready"


def workdirs(root: Path) -> set[Path]:
    return {p for p in root.iterdir() if p.name.startswith(WORKDIR_PREFIX)}


def kill_all(procs: list[subprocess.Popen], pids: set[int] = frozenset()) -> None:
    """What a test started and what it found below: killed, whatever state the test left them in."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.mark.parametrize(("stop", "ignored"), [(signal.SIGINT, ()), (signal.SIGINT, (signal.SIGINT,)),
                                               (signal.SIGTERM, (signal.SIGINT, signal.SIGTERM))],
                         ids=["ctrl-c", "sigint-as-a-background-job", "sigterm-with-both-ignored"])
def test_serve_stops_both_servers_on_ctrl_c_or_sigterm(tiny_repo, tmp_path, stop, ignored):
    """Also when started with SIGINT ignored, as a background job of a script (`omniretriever serve ... &`), or
    of a suite run as one (`make test &`), inherits it: Python then never turns SIGINT into KeyboardInterrupt
    unless serve installs the handler itself."""
    root = tmp_path / "tmp"
    root.mkdir()
    proc, ready = serve(tiny_repo, root, ignored, "--log-dir", str(tmp_path / "logs"))
    servers: set[int] = set()
    try:
        wait_ready(ready, proc)
        servers = descendants(proc.pid)
        assert len(servers) >= 3  # tritonserver, its python-backend stub, the transformer
        assert len(workdirs(root)) == 1
        proc.send_signal(stop)
        out, _ = proc.communicate(timeout=180)  # generous: a loaded 2-core machine stops slowly
    finally:
        kill_all([proc], servers)
    assert proc.returncode == 0, out
    # the signal may arrive before serve prints its URLs (the transformer answers ready a moment earlier)
    assert "stopped" in out, out
    none_alive(lambda: servers)  # the kernel reaps the children shortly after the launcher returns
    assert not workdirs(root)
    assert (tmp_path / "logs" / "tritonserver.log").is_file() and (tmp_path / "logs" / "transformer.log").is_file()


def test_the_next_serve_removes_the_work_directory_of_a_killed_one_and_keeps_a_running_ones(tiny_repo, tmp_path):
    """kill -9 of serve leaves its work directory behind, here with its python-backend stub still in it (stopped,
    its tritonserver killed as well): the next start removes both; the directory of a serve that runs stays."""
    root = tmp_path / "tmp"
    root.mkdir()
    procs, found = [], set()
    try:
        killed, killed_ready = serve(tiny_repo, root)
        running, running_ready = serve(tiny_repo, root)  # both start at once; each leaves the other's directory
        procs += [killed, running]
        wait_ready(killed_ready, killed)
        wait_ready(running_ready, running)
        assert len(workdirs(root)) == 2, workdirs(root)
        killed_tree = descendants(killed.pid)
        found |= killed_tree | descendants(running.pid)
        stub = named(killed_tree, "triton_python_backend_stub")
        triton = named(killed_tree, "bin/tritonserver")
        assert len(triton) == 1 and stub, [cmdline(p) for p in killed_tree]
        (dead_dir,) = {d for d in workdirs(root) if any(str(d) in cmdline(p) for p in killed_tree)}
        (kept,) = workdirs(root) - {dead_dir}
        for pid in stub:
            os.kill(pid, signal.SIGSTOP)
        killed.kill()
        os.kill(next(iter(triton)), signal.SIGKILL)
        killed.wait(30)
        none_alive(lambda: killed_tree - stub)  # the transformer follows serve (SIGTERM on its parent's death)
        assert dead_dir.is_dir() and all(alive(p) for p in stub)

        again, again_ready = serve(tiny_repo, root)
        procs.append(again)
        wait_ready(again_ready, again)
        found |= descendants(again.pid)
        assert not dead_dir.exists()
        none_alive(lambda: stub)
        assert kept.is_dir() and len(workdirs(root)) == 2, workdirs(root)

        for proc in (running, again):
            proc.send_signal(signal.SIGINT)
        for proc in (running, again):
            out, _ = proc.communicate(timeout=180)
            assert proc.returncode == 0, out
    finally:
        kill_all(procs, found)
    none_alive(lambda: found)
    assert not workdirs(root)


def test_serve_exits_when_tritonserver_is_killed_and_leaves_no_process_of_its_run(tiny_repo, tmp_path):
    root = tmp_path / "tmp"
    root.mkdir()
    proc, ready = serve(tiny_repo, root)
    tree: set[int] = set()
    try:
        wait_ready(ready, proc)
        tree = descendants(proc.pid)
        triton, stubs = named(tree, "bin/tritonserver"), named(tree, "triton_python_backend_stub")
        assert len(triton) == 1 and stubs, [cmdline(p) for p in tree]
        assert stubs <= naming(root, tiny_repo)  # what the scan below looks for
        os.kill(next(iter(triton)), signal.SIGKILL)
        started = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        kill_all([proc], tree)
    assert proc.returncode == 1 and "tritonserver exited with status -9" in out, out
    assert took < 20, f"serve took {took:.1f} s to notice"  # a poll every 0.5 s, the transformer's 2 s grace
    none_alive(lambda: tree | naming(root, tiny_repo))
    assert not workdirs(root)


def test_stopping_a_server_kills_what_it_started_in_another_session_and_what_it_orphaned(tmp_path):
    """A child in a session of its own (found by its parent while that runs) and a grandchild orphaned at once
    (found by the leader's session) both die with a leader that is killed."""
    sleeper = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"
    leader = ("import os, subprocess, sys, time\n"
              f"subprocess.Popen([sys.executable, '-c', {sleeper!r}, sys.argv[1]], start_new_session=True)\n"
              "if os.fork() == 0:\n"
              "    if os.fork() == 0:\n"
              f"        os.execv(sys.executable, [sys.executable, '-c', {sleeper!r}, sys.argv[2]])\n"
              "    os._exit(0)\n"
              "time.sleep(600)\n")
    pid_files = [tmp_path / "own-session.pid", tmp_path / "orphan.pid"]
    server = _Server("fake", [sys.executable, "-c", leader, *map(str, pid_files)], dict(os.environ), tmp_path / "fake.log")
    pids: set[int] = set()
    try:
        pids = wait_until(lambda: all(f.exists() and f.read_text() for f in pid_files) and
                          {int(f.read_text()) for f in pid_files}, 30, "the children did not start")
        own_session, orphan = (int(f.read_text()) for f in pid_files)
        assert own_session in descendants(server.proc.pid)
        wait_until(lambda: orphan not in descendants(server.proc.pid), 10, "the grandchild was not orphaned")
        server.track()  # as every poll of LocalEndpoint.check_alive does
        assert pids <= set(server.tree)
        os.kill(server.proc.pid, signal.SIGKILL)
        with pytest.raises(ServingError, match="fake exited with status -9"):
            wait_until(lambda: server.check_alive(), 30, "the leader did not exit")
        server.stop(5)
        assert server.proc.returncode == -signal.SIGKILL
    finally:
        kill_all([server.proc], pids)
    none_alive(lambda: pids)


def test_only_the_work_directories_of_owners_that_no_longer_run_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    running = make_workdir()  # this process's
    pid, start = (int(x) for x in running.name[len(WORKDIR_PREFIX):].split("-")[:2])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"{WORKDIR_PREFIX}{gone.pid}-{start}-dead0000"
    reused = tmp_path / f"{WORKDIR_PREFIX}{pid}-{start + 1}-reused00"  # this pid, another process's start time
    unknown = tmp_path / f"{WORKDIR_PREFIX}abcd1234"  # no owner in its name
    for d in (dead, reused, unknown):
        (d / "logs").mkdir(parents=True)
    not_a_dir = tmp_path / f"{WORKDIR_PREFIX}{gone.pid}-{start}-file0000"
    not_a_dir.write_text("")
    assert sorted(remove_abandoned_workdirs()) == sorted([dead, reused])
    assert running.is_dir() and unknown.is_dir() and not_a_dir.is_file()
    assert not dead.exists() and not reused.exists()


def test_a_server_that_fails_to_start_raises_with_its_log_and_leaves_nothing(tiny_repo, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(tiny_repo, broken)
    config = broken / "local" / "omniretriever-encoder" / "config.pbtxt"
    text = config.read_text()
    digest = text.split('key: "onnx_sha256"')[1].split('string_value: "')[1][:64]
    config.write_text(text.replace(digest, "0" * 64))  # the local model must refuse a graph it was not built for
    before = descendants(os.getpid())
    with pytest.raises(ServingError) as info:
        with LocalEndpoint(broken, startup_timeout=120):
            pytest.fail("the endpoint must not start")
    assert "tritonserver" in str(info.value) and "the config expects" in str(info.value)
    none_alive(lambda: descendants(os.getpid()) - before)


def test_missing_repository_or_index_is_refused_before_anything_starts(tiny_repo, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model repository"):
        LocalEndpoint(tmp_path).__enter__()
    with pytest.raises(FileNotFoundError, match="index .* does not exist"):
        LocalEndpoint(tiny_repo, index=tmp_path / "none.safetensors").__enter__()


def test_the_search_model_refuses_an_index_of_another_model(tiny_repo, tiny_run, tiny_data, tmp_path):
    """In a process of its own: kserve and tritonclient.grpc cannot share one."""
    import numpy as np

    index = save_index(tmp_path / "other.safetensors", ["a", "b"], {"av": np.eye(2, 128, dtype=np.float32)}, "f" * 64)
    assert load_index(index).views == ("av",)
    code = ("import sys; from pathlib import Path; from serving.transformer import SearchModel; "
            "from serving.limits import ServingLimits; "
            "SearchModel('s', Path(sys.argv[1]), ServingLimits(), Path(sys.argv[2])).load()")
    res = subprocess.run([sys.executable, "-c", code, str(tiny_repo / "production"), str(index)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "rebuild the index" in res.stderr


def test_the_search_model_serves_a_milvus_store_and_refuses_one_of_another_model(tiny_repo, tiny_run, tiny_data, tmp_path):
    """--index given as a Milvus Lite store: the model's galleries are searched there; a store holding only
    another model's galleries is refused at load, naming it, and so is one whose gallery of the served model is
    still being built (not published). Each store is written by `index import` in a
    process of its own (Milvus Lite serves one process per store, and a process keeps it until it exits),
    and the search model loads in another, as above."""
    import numpy as np

    from serving.index import build_index

    built_path = build_index(tiny_run, tiny_data, "test", ["av"], tmp_path / "g.safetensors", workers=1, progress=False)
    built = load_index(built_path)
    other = save_index(tmp_path / "other.safetensors", ["a", "b"], {"av": np.eye(2, 128, dtype=np.float32)}, "f" * 64)
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    for index, store in ((built_path, ours), (other, theirs)):
        done = subprocess.run([sys.executable, "-m", "omniretriever", "index", "import", "--index", str(index),
                               "--uri", str(store)], capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
    code = ("import sys, numpy as np; from pathlib import Path; from serving.transformer import SearchModel; "
            "from serving.limits import ServingLimits; "
            "m = SearchModel('s', Path(sys.argv[1]), ServingLimits(), sys.argv[2]); m.load(); "
            "q = np.asarray(sys.argv[3].split(','), np.float32)[None]; "
            "print(m.views, m.store.search(q, 'av', 3).ids[0].tolist())")
    query = ",".join(str(float(x)) for x in built.embeddings["av"][5])
    res = subprocess.run([sys.executable, "-c", code, str(tiny_repo / "production"), str(ours), query],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"('av',) ['{built.entries['av'].ids[5]}'" in res.stdout
    res = subprocess.run([sys.executable, "-c", code, str(tiny_repo / "production"), str(theirs), query],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode != 0 and f"--index {theirs}" in res.stderr and "holds no gallery of the served model" in res.stderr
    building = tmp_path / "building.db"  # the model's first gallery, written but not yet published
    write = ("import sys, numpy as np; from serving.index import load_index; from serving.store import GalleryStore, "
             "ItemMeta; idx = load_index(sys.argv[1]); e = idx.entries['av']; "
             "s = GalleryStore.open(sys.argv[2], idx.weights_sha256); s.ensure_view('av', idx.embeddings['av'].shape[1]); "
             "s.replace_items('av', list(dict.fromkeys(e.ids)), idx.embeddings['av'], e, "
             "{i: ItemMeta() for i in e.ids}); print(s.generation, s.live)")
    done = subprocess.run([sys.executable, "-c", write, str(built_path), str(building)], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0 and done.stdout.split() == ["1", "False"], done.stderr[-2000:]
    res = subprocess.run([sys.executable, "-c", code, str(tiny_repo / "production"), str(building), query],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode != 0 and "is still being built (generation 1, not yet published)" in res.stderr
