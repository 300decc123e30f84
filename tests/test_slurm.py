"""cluster/slurm/gbvnet.sbatch under a real Slurm: a one-host cluster (munged, slurmctld and slurmd of Debian's
slurm-wlm 22.05, configured for a container: no cgroups, ``proctrack/linuxproc``, ``task/none``) started by this
module with its own key, socket, ports and state folders, so it runs beside any Slurm or munge of the machine and
stops only what it started. One ``sbatch`` job runs a search and the LOSO evaluation of its best config, exactly as
cluster/slurm/README.md submits them (the script's nodes, token and ``ray job submit``).

Where Slurm is not installed or cannot start, the test is skipped with the reason; ``GBVNET_REQUIRE_SLURM=1``
(set by .ci/run, which installs Slurm) turns that skip into a failure, so CI never passes without the job running.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SBATCH = REPO / "cluster" / "slurm" / "gbvnet.sbatch"
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo", "scancel")
NODE, NODE_CPUS = "gbvnet-node", 4  # the node offers 4 CPUs; the job asks for 1 (Ray alone would see them all)
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}


def unavailable(reason: str):
    """Skip with ``reason``, or fail where ``GBVNET_REQUIRE_SLURM=1`` (CI, which installs Slurm)."""
    if os.environ.get("GBVNET_REQUIRE_SLURM") == "1":
        pytest.fail(f"GBVNET_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(folder: Path) -> str:
    """One controller and one node on this host, each on a free port, state and logs under ``folder``."""
    host = socket.gethostname().split(".")[0]
    return f"""\
ClusterName=gbvnettest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge.socket
StateSaveLocation={folder}/slurmctld
SlurmdSpoolDir={folder}/slurmd
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=3600
KillWait=10
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Slurm:
    env: dict  # the environment of a user of this cluster: SLURM_CONF, the project's virtual environment on PATH
    folder: Path

    def run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO)

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields of one job."""
        out = self.run("scontrol", "show", "job", "--oneliner", job_id).stdout
        return dict(field.split("=", 1) for field in out.split() if "=" in field)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(self.folder.glob("*.log")))


def stop(procs: list[subprocess.Popen]) -> None:
    """Stop the daemons this module started, the last started first."""
    for proc in reversed(procs):
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def slurm() -> Slurm:
    """munged, slurmctld and slurmd in the foreground, as children of this process; yields once the node is idle."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        unavailable(f"Slurm is not installed ({' '.join(missing)} not found): `apt-get install slurm-wlm munge` "
                    f"as root (.ci/run does)")
    if os.geteuid() != 0:
        unavailable("slurmd starts jobs as their user, so it runs as root: run this test as root")
    folder = Path(tempfile.mkdtemp(prefix="gbvslurm-", dir="/tmp"))  # short: the munge socket's path
    for name in ("slurmctld", "slurmd"):
        (folder / name).mkdir()
    key = folder / "munge.key"
    with os.fdopen(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(secrets.token_bytes(1024))
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RAY_ADDRESS", "RAY_API_SERVER"))}
    env.update(SLURM_CONF=str(conf), PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    cluster = Slurm(env, folder)
    daemons = [
        ["munged", "--foreground", "--force", f"--socket={folder}/munge.socket", f"--key-file={key}",
         f"--pid-file={folder}/munged.pid", f"--seed-file={folder}/munged.seed", f"--log-file={folder}/munged.log"],
        ["slurmctld", "-D", "-f", str(conf)],
        ["slurmd", "-D", "-f", str(conf), "-N", NODE],
    ]
    procs: list[subprocess.Popen] = []
    try:
        for command in daemons:
            with open(folder / f"{command[0]}.out", "w") as out:
                procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
            for _ in range(100):  # each daemon answers before the next one starts
                if procs[-1].poll() is not None or command[0] != "munged" or (folder / "munge.socket").exists():
                    break
                time.sleep(0.1)
        deadline = time.monotonic() + 90
        while cluster.run("sinfo", "--noheader", "--Node", "--format=%T").stdout.strip() != "idle":
            dead = [p.args[0] for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                stop(procs)
                outs = "\n".join((folder / f"{c[0]}.out").read_text()[-1500:] for c in daemons)
                unavailable(f"the one-host Slurm did not start ({', '.join(dead) or 'no idle node in 90 s'} "
                            f"ended):\n{outs}\n{cluster.logs()}")
            time.sleep(1)
        yield cluster
    finally:
        stop(procs)
        shutil.rmtree(folder, ignore_errors=True)


def wait_for(cluster: Slurm, job_id: str, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while (job := cluster.job(job_id)).get("JobState") not in ENDED:
        if time.monotonic() > deadline:
            cluster.run("scancel", job_id)
            pytest.fail(f"job {job_id} still {job.get('JobState')} after {timeout:.0f} s")
        time.sleep(3)
    return job


def world_accessible(folder: Path) -> list[str]:
    """Files and folders under ``folder`` that other users may read, write or enter."""
    return [f"{p} {stat.filemode(p.lstat().st_mode)}" for p in [folder, *folder.rglob("*")]
            if not p.is_symlink() and p.lstat().st_mode & 0o007]


# slurmd start, Ray's head in an srun step, a 2-trial search and a 2-fold evaluation (1 epoch each) on 1 CPU:
# about 2-4 minutes on 2 busy cores
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_sbatch_runs_the_search_and_the_evaluation_with_the_cpus_slurm_granted(slurm, mahnob_cache, tmp_path):
    shared = tmp_path / "shared"  # GBVNET_SHARED: the state folder, Ray storage, results, MLflow
    ray_temp = Path(tempfile.mkdtemp(prefix="gbvray-", dir="/tmp"))  # short: Ray's socket paths
    best, loso = shared / "results" / "best.yaml", shared / "results" / "loso.json"
    search = ["python", "tune/search.py", "--dataset", "mahnob", "--cache", str(mahnob_cache), "--modality", "bio",
              "--space", "smoke", "--search-trials", "2", "--search-epochs", "1", "--search-subjects", "1", "2",
              "--concurrent", "1", "--output", str(best)]
    evaluate = ["python", "-m", "evaluation.loso", "--dataset", "mahnob", "--cache", str(mahnob_cache), "--modality",
                "bio", "--config", str(best), "--epochs", "1", "--only-test-subjects", "3", "4", "--concurrent", "1",
                "--output", str(loso)]
    env = {k: v for k, v in slurm.env.items() if k not in ("RAY_AUTH_TOKEN", "GBVNET_STORAGE", "MLFLOW_TRACKING_URI")}
    env.update(GBVNET_SHARED=str(shared), GBVNET_RAY_TEMP_DIR=str(ray_temp))
    # the #SBATCH lines overridden as a site would edit them: one node, 1 CPU and no GPU per task, any memory; from
    # a shell with `umask 077`, as the README submits
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--nodes=1", "--cpus-per-task=1", "--gpus-per-task=0", "--mem=0", "--time=30",
         f"--output={tmp_path}/gbvnet-%j.out", str(SBATCH.relative_to(REPO)), "sh", "-c",
         f"{' '.join(search)} && {' '.join(evaluate)}"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
        umask=0o077)
    try:
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip().split(";")[0]
        job = wait_for(slurm, job_id, timeout=1200)
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    out_file = tmp_path / f"gbvnet-{job_id}.out"
    out = out_file.read_text()
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), f"{job}\n{out[-6000:]}\n{slurm.logs()}"
    assert job["BatchHost"] == NODE and "succeeded" in out, out[-6000:]

    # Ray offered the job exactly the CPUs Slurm granted it (1 of the node's 4; Ray alone counts the machine's cores)
    ray_cpus, ray_gpus = re.search(r"Ray has (\S+) CPUs and (\S+) GPUs", out).groups()
    assert (float(ray_cpus), float(ray_gpus)) == (float(job["NumCPUs"]), 0.0) == (1.0, 0.0), out[-6000:]

    assert yaml.safe_load(best.read_text())["search"]["trials"] == 2
    doc = json.loads(loso.read_text())
    assert [f["fold"] for f in doc["folds"]] == ["subject-3", "subject-4"]
    client = MlflowClient(f"sqlite:///{shared / 'mlflow.db'}")  # the job's default store, on the shared folder
    searched = client.search_runs([client.get_experiment_by_name("gbvnet-mahnob-search").experiment_id])
    assert searched and all(r.info.status == "FINISHED" for r in searched)
    parent = client.get_run(doc["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and "test_accuracy_mean" in parent.data.metrics
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["subject-3", "subject-4"]
    assert (shared / "ray").is_dir() and not (shared / f"slurm-{job_id}").exists(), "the job's token was left"
    assert not world_accessible(shared) and not out_file.stat().st_mode & 0o007, "\n".join(world_accessible(shared))
