"""Several nodes on one machine: ``slurm/local_cluster.sh start --nodes 3`` makes three network
namespaces (node1..node3, each with its own hostname, address and slurmd), and the real scripts
of slurm/ run across them: a 2-node ``train_cpu.sbatch`` job under ``srun --mpi=pmi2`` (MPI over
TCP between the namespaces), a job array spread over the nodes, ``mpiexec`` across the nodes
without Slurm, and a node killed mid-epoch whose job is requeued, resumes on the remaining nodes
and ends bit-identical to an uninterrupted run without losing a finished query's timing rows.

Everything is checked through the command line, results.json and the HDF5 timing logs. The
cluster has its own directory, ports and subnet (not test_slurm.py's), so both modules can run
in one pytest process; the module stops what it started. Needs root and network namespaces;
elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from slurmjobs import REPO, Cluster, Submission, clean_environment

pytestmark = pytest.mark.slurm

SCRIPT = str(REPO / "slurm" / "local_cluster.sh")
CONFIG = "jobs/iris_quick.toml"  # relative to the submit directory (the repository root)
QUICK = ["--set", "data.max_train=24", "--set", "evaluation.gaussian_draws=1"]
ONE_EPOCH = ["--set", "training.epochs=1", *QUICK]
THREE_EPOCHS = ["--set", "training.epochs=3", *QUICK]
# slow enough to kill a node mid-epoch: rank 1 sleeps per tile batch, numbers unchanged
SLOW = [*THREE_EPOCHS, "--set", "execution.straggler_ranks=[1]", "--set", "execution.straggler_delay=0.4"]
NODES = 3
START_TIMEOUT = 900.0  # the first start may install slurm-wlm and munge
JOB_TIMEOUT = 180.0
# the module's cluster: not test_slurm.py's directory, ports or subnet, nor the script's defaults
CLUSTER = {
    "HPCQNN_SLURM_DIR": "/tmp/hpcqnn-slurm-multinode-test",
    "HPCQNN_SLURM_CTLD_PORT": "6937",
    "HPCQNN_SLURM_D_PORT": "6938",
    "HPCQNN_SLURM_SUBNET": "10.213.37",
}
# clusters the bad-input tests try to start (they must leave nothing behind)
SCRATCH = {"HPCQNN_SLURM_CTLD_PORT": "6947", "HPCQNN_SLURM_D_PORT": "6948", "HPCQNN_SLURM_SUBNET": "10.213.47"}


def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HPCQNN_SLURM_"))}
    env.update(extra)
    return env


def local_cluster(*args: str, env: dict[str, str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def namespace_support() -> str | None:
    """Why namespace nodes cannot run here, or None."""
    if os.geteuid() != 0:
        return "slurm/local_cluster.sh needs root (daemons, network namespaces)"
    if shutil.which("ip") is None or shutil.which("nsenter") is None:
        return "no iproute2 (ip) or util-linux nsenter"
    probe = f"hqnn-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make network namespaces: ip netns add: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def made_by(subnet: str) -> list[str]:
    """Namespaces and links of this machine named for a cluster on ``subnet`` (hqnnN...)."""
    prefix = f"hqnn{subnet.rsplit('.', 1)[1]}"
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names += [m.split("@")[0] for m in re.findall(r"^\d+: (\S+?):", links, re.M)]
    return sorted(n for n in names if n.startswith(prefix))


def running(pid: int) -> bool:
    """The process exists and is no zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def processes_using(path: str) -> list[int]:
    """PIDs whose command line mentions ``path`` (e.g. a cluster's slurm.conf)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != str(os.getpid()):
            try:
                if path.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


# -- bad input: refused before anything is made, or everything removed --------------------------


@pytest.fixture(scope="module")
def namespaces():
    why = namespace_support()
    if why:
        pytest.skip(why)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "--nodes must be a positive integer"),
        (["--nodes", "two"], "--nodes must be a positive integer"),
        (["--nodes", "100000"], "this machine holds at most"),
        (["--nodes"], "--nodes needs a value"),
        (["--node", "2"], "unknown argument '--node'"),
    ],
)
def test_bad_start_is_refused(namespaces, tmp_path, args, message):
    env = script_env(HPCQNN_SLURM_DIR=str(tmp_path / "state"), **SCRATCH)
    run = local_cluster("start", *args, env=env)
    assert run.returncode != 0 and message in run.stderr, run.stdout + run.stderr
    assert run.stderr.startswith("local_cluster: error: "), run.stderr
    assert made_by(SCRATCH["HPCQNN_SLURM_SUBNET"]) == []
    assert not (tmp_path / "state" / "slurm.conf").exists()


def test_interrupted_start_leaves_nothing(namespaces, tmp_path):
    """SIGTERM to a start once slurmctld runs (the network made, slurmds starting): the start
    fails and removes everything it made, processes included."""
    state = tmp_path / "state"
    env = script_env(HPCQNN_SLURM_DIR=str(state), **SCRATCH)
    start = subprocess.Popen(
        [SCRIPT, "start", "--nodes", "2"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + START_TIMEOUT
    while not (state / "slurmctld.pid").exists() and start.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    made = made_by(SCRATCH["HPCQNN_SLURM_SUBNET"])
    start.terminate()
    out, err = start.communicate(timeout=120)
    assert start.returncode == 143, out + err
    assert "start failed: removing what it made" in err, err
    assert "hqnn47br" in made and "hqnn47-node2" in made, made
    assert made_by(SCRATCH["HPCQNN_SLURM_SUBNET"]) == []
    assert processes_using(str(state / "slurm.conf")) == []
    assert not (state / "slurmctld.pid").exists() and not (state / "created").exists()
    status = local_cluster("status", env=env)
    assert status.returncode == 1 and "slurmctld: not running" in status.stdout


def test_leftover_link_is_refused_before_anything(namespaces, tmp_path):
    """A link with a name the cluster would make (another cluster on the subnet?) is an error
    before anything is made; the link is left alone."""
    leftover = "hqnn47v2"
    subprocess.run(["ip", "link", "add", leftover, "type", "bridge"], check=True)
    try:
        env = script_env(HPCQNN_SLURM_DIR=str(tmp_path / "state"), **SCRATCH)
        run = local_cluster("start", "--nodes", "2", env=env)
        assert run.returncode != 0 and f"a link named {leftover} exists already" in run.stderr, run.stderr
        assert made_by(SCRATCH["HPCQNN_SLURM_SUBNET"]) == [leftover]
    finally:
        subprocess.run(["ip", "link", "del", leftover], check=True)


def test_overlapping_subnet_is_refused(namespaces, tmp_path):
    """A subnet that overlaps an address of this machine is refused before anything is made."""
    taken = "hqtest-overlap"  # a link of this test's own, holding 10.213.47.1/24
    subprocess.run(["ip", "link", "add", taken, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.213.47.1/24", "dev", taken], check=True)
        env = script_env(HPCQNN_SLURM_DIR=str(tmp_path / "state"), **SCRATCH)
        run = local_cluster("start", "--nodes", "2", env=env)
        assert (
            run.returncode != 0
            and "HPCQNN_SLURM_SUBNET 10.213.47.0/24 overlaps 10.213.47.1/24 (address of hqtest-overlap)" in run.stderr
        ), run.stderr
        assert made_by(SCRATCH["HPCQNN_SLURM_SUBNET"]) == []
    finally:
        subprocess.run(["ip", "link", "del", taken], check=True)


def test_start_after_a_crash_cleans_up(namespaces, tmp_path):
    """A cluster whose daemons died (SIGKILL, as in a crash) left its namespaces: the next start
    removes them and starts afresh; stop then leaves nothing."""
    state = tmp_path / "state"
    env = script_env(HPCQNN_SLURM_DIR=str(state), **SCRATCH)
    first = local_cluster("start", "--nodes", "2", env=env, timeout=START_TIMEOUT)
    assert first.returncode == 0, first.stdout + first.stderr
    try:
        daemons = [int(p.read_text()) for p in [state / "slurmctld.pid", *sorted(state.glob("nodes/*/slurmd.pid"))]]
        assert len(daemons) == 3
        for pid in daemons:
            os.kill(pid, 9)
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in daemons) and time.monotonic() < deadline:
            time.sleep(0.05)
        again = local_cluster("start", "--nodes", "2", env=env, timeout=START_TIMEOUT)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "removing what a previous cluster" in again.stdout and "2 nodes idle" in again.stdout, again.stdout
    finally:
        stop = local_cluster("stop", env=env)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert made_by(SCRATCH["HPCQNN_SLURM_SUBNET"]) == []
    assert processes_using(str(state / "slurm.conf")) == []


# -- the cluster --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(namespaces):
    env = script_env(**CLUSTER)
    if local_cluster("status", env=env).returncode == 0:
        state = CLUSTER["HPCQNN_SLURM_DIR"]
        pytest.fail(f"a cluster already runs in {state}: stop it ({SCRIPT} stop with HPCQNN_SLURM_DIR set)")
    started = time.monotonic()
    start = local_cluster("start", "--nodes", str(NODES), env=env, timeout=START_TIMEOUT)
    print(f"\n[test_multinode] cluster start ({time.monotonic() - started:.1f} s): {start.stdout.strip()}")
    if start.returncode != 0 and "apt-get" in start.stderr:
        pytest.skip(f"cannot install Slurm: {start.stderr}")
    assert start.returncode == 0, start.stdout + start.stderr
    yield Cluster(clean_environment(SLURM_CONF=f"{CLUSTER['HPCQNN_SLURM_DIR']}/slurm.conf", **CLUSTER))
    stop = local_cluster("stop", env=env)
    print(f"\n[test_multinode] cluster stop: {stop.stdout.strip()} {stop.stderr.strip()}")


def node_list(cluster: Cluster, nodelist: str) -> list[str]:
    """``node[1,3]`` -> ``["node1", "node3"]``."""
    return cluster.command("scontrol", "show", "hostnames", nodelist).stdout.split()


def train(out: Path, *args: str) -> dict:
    """``hpcqnn train CONFIG --out out ARGS`` as one process; its results.json."""
    command = [str(Path(sys.executable).parent / "hpcqnn"), "train", CONFIG, "--out", str(out), *args]
    run = subprocess.run(
        command, cwd=REPO, env=clean_environment(), capture_output=True, text=True, timeout=JOB_TIMEOUT
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["ranks"] == 1
    return results


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict]:
    """1-rank runs without Slurm: one epoch, and three (the node-failure job's numbers)."""
    out = tmp_path_factory.mktemp("reference")
    return {"one": train(out / "one", *ONE_EPOCH), "three": train(out / "three", *THREE_EPOCHS)}


def assert_same_numbers(results: dict, expected: dict) -> None:
    """Exact mode: parameters, probabilities, losses and robustness equal to the last bit."""
    assert results["final"] == expected["final"]
    assert results["robustness"] == expected["robustness"]
    assert results["budget"] == expected["budget"]
    drop = ("seconds",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in results["history"]] == [
        {k: v for k, v in h.items() if k not in drop} for h in expected["history"]
    ]


def rank_file(run_dir: Path, rank: int) -> Path:
    return run_dir / "timing" / f"rank-{rank:05d}.h5"


def read_log(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """A rank's timing rows, superseded rows and attributes (readable while it is written: SWMR)."""
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        phases = f["phases"][()]
        superseded = f["superseded"][()] if "superseded" in f else phases[:0]
        return phases, superseded, dict(f.attrs)


def check_placement(run_dir: Path, nodes: list[str], per_node: int) -> list[dict]:
    """Rank r ran on nodes[r // per_node] (srun's and hydra's block distribution): its log names
    that node's hostname and local rank r % per_node. Returns every rank's attributes."""
    attributes = []
    for rank in range(len(nodes) * per_node):
        _, _, attrs = read_log(rank_file(run_dir, rank))
        assert (attrs["rank"], attrs["size"]) == (rank, len(nodes) * per_node)
        assert attrs["hostname"] == nodes[rank // per_node], (rank, attrs["hostname"], nodes)
        assert attrs["local_rank"] == rank % per_node, (rank, attrs["local_rank"])
        attributes.append(attrs)
    assert not rank_file(run_dir, len(nodes) * per_node).exists()
    return attributes


def test_second_start_is_refused(cluster):
    env = script_env(**CLUSTER)
    run = local_cluster("start", "--nodes", "2", env=env)
    assert run.returncode != 0 and "already running" in run.stderr and "node1,node2,node3" in run.stderr, run.stderr
    status = local_cluster("status", env=env)
    assert status.returncode == 0 and "slurmctld: running (pid" in status.stdout, status.stdout
    for k in range(1, NODES + 1):
        assert f"slurmd node{k} (10.213.37.{10 + k}, netns hqnn37-node{k}): running (pid" in status.stdout, (
            status.stdout
        )
    nodes = local_cluster("nodes", env=env).stdout.splitlines()
    assert [line.split()[:2] for line in nodes] == [[f"node{k}", f"10.213.37.{10 + k}"] for k in (1, 2, 3)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["exec", "node9", "true"], "no node 'node9'"),
        (["kill-node"], "name a node"),
        (["exec", "node1"], "give a command"),
    ],
)
def test_bad_node_commands(cluster, args, message):
    run = local_cluster(*args, env=script_env(**CLUSTER))
    assert run.returncode != 0 and message in run.stderr, run.stderr


def test_nodes_are_separate_hosts(cluster):
    """Each node has its own hostname and address, and reaches the others by name."""
    env = script_env(**CLUSTER)
    probe = "import socket; print(socket.gethostname(), socket.gethostbyname('node3'))"
    for k in (1, 2):
        run = local_cluster("exec", f"node{k}", sys.executable, "-c", probe, env=env)
        assert run.stdout.split() == [f"node{k}", "10.213.37.13"], run.stdout + run.stderr
        addresses = local_cluster("exec", f"node{k}", "ip", "-4", "-o", "addr", "show", "eth0", env=env).stdout
        assert f"10.213.37.{10 + k}/24" in addresses


def two_node_job(cluster, out: Path, *overrides: str) -> Submission:
    """``sbatch -N 2 --ntasks-per-node=2 slurm/train_cpu.sbatch CONFIG OUT OVERRIDES...``."""
    script = str(REPO / "slurm" / "train_cpu.sbatch")
    args = ["-N", "2", "--ntasks-per-node=2", f"--output={out}/%x-%j.out", script, CONFIG, str(out)]
    return Submission(cluster, *args, *overrides, logs=out)


def test_two_nodes_match_one_rank(cluster, reference, tmp_path):
    """sbatch -N 2 --ntasks-per-node=2 train_cpu.sbatch: srun --mpi=pmi2 over TCP between two
    namespace nodes; every rank's log names its node and local rank; numbers of the 1-rank run."""
    job = two_node_job(cluster, tmp_path, *ONE_EPOCH).wait(JOB_TIMEOUT)
    print(f"\n[test_multinode] 2-node job {job.job_id}: {job.seconds:.1f} s")
    assert job.returncode == 0, job.log
    assert "srun --mpi=pmi2 --ntasks=4" in job.log, job.log
    run_dir = tmp_path / f"hpcqnn-cpu-{job.job_id}"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["ranks"] == 4 and results["slurm"]["nodes"] == 2
    nodes = node_list(cluster, results["slurm"]["nodelist"])
    assert len(nodes) == 2
    for attrs in check_placement(run_dir, nodes, 2):
        assert attrs["slurm_job_id"] == job.job_id and attrs["slurm_local_id"] == attrs["local_rank"]
    assert_same_numbers(results, reference["one"])


def test_sweep_array_spreads_over_nodes(cluster, tmp_path):
    """submit_sweep.sh: three 2-rank array tasks, each filling a 2-CPU node, run side by side on
    the three nodes."""
    matrix = tmp_path / "matrix.txt"
    matrix.write_text(
        f"{CONFIG} 2\n{CONFIG} 2 --set execution.schedule=dynamic\n"
        f"{CONFIG} 2 --set execution.straggler_ranks=[1] --set execution.straggler_slowdown=2\n"
    )
    job = Submission(
        cluster,
        str(REPO / "slurm" / "submit_sweep.sh"),
        f"--output={tmp_path}/%x-%A_%a.out",
        str(matrix),
        str(tmp_path),
        *ONE_EPOCH,
        logs=tmp_path,
    ).wait(JOB_TIMEOUT)
    print(f"\n[test_multinode] sweep array {job.job_id}: {job.seconds:.1f} s")
    assert job.returncode == 0, job.log
    hosts = []
    for task in range(3):
        run_dir = tmp_path / f"hpcqnn-sweep-{job.job_id}_{task}"
        results = json.loads((run_dir / "results.json").read_text())
        assert results["ranks"] == 2 and results["slurm"]["array_task_id"] == task
        (node,) = node_list(cluster, results["slurm"]["nodelist"])
        check_placement(run_dir, [node], 2)
        hosts.append(node)
    assert sorted(hosts) == ["node1", "node2", "node3"], (hosts, job.log)


def test_mpiexec_across_nodes_without_slurm(cluster, reference, tmp_path):
    """The workstation-cluster path: MPICH's mpiexec on node1 starts 2 ranks on node2 and 2 on
    node3 through the cluster's rsh launcher (no ssh, no Slurm); numbers of the 1-rank run."""
    state = CLUSTER["HPCQNN_SLURM_DIR"]
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    launcher = [
        SCRIPT,
        "exec",
        "node1",
        mpiexec,
        "-launcher",
        "rsh",
        "-launcher-exec",
        f"{state}/rsh",
        "-hosts",
        "node2:2,node3:2",
        "-n",
        "4",
    ]
    env = clean_environment(**CLUSTER)
    command = [
        *launcher,
        str(Path(sys.executable).parent / "hpcqnn"),
        "train",
        CONFIG,
        "--out",
        str(tmp_path / "run"),
        *ONE_EPOCH,
    ]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["ranks"] == 4 and not results.get("slurm")
    check_placement(tmp_path / "run", ["node2", "node3"], 2)
    assert_same_numbers(results, reference["one"])


@pytest.mark.parametrize("victim_index", [1, 0], ids=["other-node", "batch-host"])
def test_node_failure_requeues_and_resumes(cluster, reference, tmp_path, victim_index: int):
    """A 2-node job loses a node mid-epoch (every process of it SIGKILLed, its slurmd too; the
    node that runs the batch script, or the other one): the job ends and is requeued within
    Slurm's limits, resumes from the checkpoint on the nodes left, finishes with the parameters of
    an uninterrupted run, and every timing row of a query that had finished before the kill is
    still in the logs."""
    env = script_env(**CLUSTER)
    submission = two_node_job(cluster, tmp_path, *SLOW)
    run_dir = tmp_path / f"hpcqnn-cpu-{submission.job_id}"
    submission.wait_for("epoch 1/3")  # printed after the epoch's checkpoint
    first_nodes = node_list(cluster, re.search(r"restart 0 on (\S+):", submission.log()).group(1))
    # mid-epoch 2: wait until rank 0 logged a query after the checkpoint's
    checkpointed = int(read_log(rank_file(run_dir, 0))[0]["query"].max())
    deadline = time.monotonic() + 60
    while int(read_log(rank_file(run_dir, 0))[0]["query"].max()) <= checkpointed:
        assert time.monotonic() < deadline, submission.log()
        time.sleep(0.05)
    before = [read_log(rank_file(run_dir, r))[0] for r in range(4)]
    victim = first_nodes[victim_index]  # the batch script runs on the first node
    killed = local_cluster("kill-node", victim, env=env)
    killed_at = time.monotonic()
    assert killed.returncode == 0 and f"killed {victim}" in killed.stdout, killed.stdout + killed.stderr
    try:
        submission.wait_for("restart 1", timeout=90)
        requeued_after = time.monotonic() - killed_at
        job = submission.wait(JOB_TIMEOUT + 120)
        finished_after = time.monotonic() - killed_at
    finally:
        restart = local_cluster("start-node", victim, env=env)
    print(
        f"\n[test_multinode] node failure: {victim} killed; job {job.job_id} requeued after {requeued_after:.1f} s, "
        f"finished {finished_after:.1f} s after the kill"
    )
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert job.returncode == 0, job.log
    # SlurmdTimeout=10 s, KillWait=10 s, a credential lifetime of 5 s: requeued well within a minute
    assert requeued_after < 60, job.log
    controller_log = Path(CLUSTER["HPCQNN_SLURM_DIR"], "log", "slurmctld.log").read_text()
    assert f"requeue job JobId={job.job_id} due to failure of node {victim}" in controller_log, job.log
    assert "hpcqnn-slurm: requeued (restart 1): resuming from" in job.log and "resuming at epoch 2" in job.log, job.log
    results = json.loads((run_dir / "results.json").read_text())
    second_nodes = node_list(cluster, results["slurm"]["nodelist"])
    assert victim not in second_nodes and len(second_nodes) == 2, (victim, second_nodes)
    assert results["slurm"]["restart_count"] == 1
    check_placement(run_dir, second_nodes, 2)
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3]
    assert_same_numbers(results, reference["three"])
    queries = results["budget"]["queries"]
    redone = 0
    for rank, old in enumerate(before):
        phases, superseded, _ = read_log(rank_file(run_dir, rank))
        assert sorted(set(phases["query"].tolist())) == list(range(queries)), rank
        kept = {tuple(row) for row in np.concatenate([phases, superseded]).tolist()}
        lost = [row for row in old.tolist() if tuple(row) not in kept]
        assert not lost, (rank, lost)
        redone += len(superseded)
    assert redone > 0, "the kill came after a query past the checkpoint: its rows must be superseded"


def test_stop_removes_everything(cluster):
    """``stop`` ends every process of the cluster (by PID), removes its namespaces and links."""
    env = script_env(**CLUSTER)
    state = CLUSTER["HPCQNN_SLURM_DIR"]
    pids = [int(Path(f"{state}/slurmctld.pid").read_text())]
    for k in range(1, NODES + 1):
        pids += map(
            int,
            subprocess.run(["ip", "netns", "pids", f"hqnn37-node{k}"], capture_output=True, text=True).stdout.split(),
        )
    assert len(pids) >= 1 + NODES and made_by(CLUSTER["HPCQNN_SLURM_SUBNET"])
    stop = local_cluster("stop", env=env)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert made_by(CLUSTER["HPCQNN_SLURM_SUBNET"]) == []
    alive = [pid for pid in pids if running(pid)]
    assert alive == [], alive
    assert processes_using(f"{state}/slurm.conf") == []
    assert not Path(f"{state}/rsh").exists()
    assert "nothing running" in local_cluster("stop", env=env).stdout
