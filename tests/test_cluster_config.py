"""Static checks of cluster/: the launcher config against Ray's own schema, the KubeRay manifests, the Dockerfile,
the job runtime environment and the MLflow stack; the commands they run are parsed with the real CLI parsers, so
a renamed flag breaks a test here instead of a cluster job. Fast: no Ray cluster, no network, no Docker."""

from __future__ import annotations

import argparse
import configparser
import contextlib
import copy
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHER = CLUSTER / "gbvnet-gpu.yaml"
KUBERAY = CLUSTER / "kuberay"
DOCKERFILE = CLUSTER / "Dockerfile"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"
COMPOSE = CLUSTER / "mlflow" / "docker-compose.yaml"
README = CLUSTER / "README.md"
SLURM = CLUSTER / "slurm"
READMES = (README, SLURM / "README.md")
SHELL_OPERATORS = {"&&", "||", ";", "|", ">", ">>", "<", "&"}


def load(path: Path):
    return yaml.safe_load(path.read_text())


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kuberay(kind: str, filename: str) -> dict:
    found = [d for d in documents(KUBERAY / filename) if d.get("kind") == kind]
    assert len(found) == 1, f"{filename}: expected one {kind}, found {len(found)}"
    return found[0]


def raycluster() -> dict:
    return kuberay("RayCluster", "raycluster.yaml")


def rayjob(filename: str) -> dict:
    return kuberay("RayJob", filename)


def pod_specs(cluster_spec: dict) -> list[tuple[str, dict]]:
    """(group name, pod spec) of the head group and every worker group of a RayCluster spec."""
    out = [("head", cluster_spec["headGroupSpec"]["template"]["spec"])]
    out += [(g["groupName"], g["template"]["spec"]) for g in cluster_spec["workerGroupSpecs"]]
    return out


def images_in(node) -> list[str]:
    """Every container image named anywhere in a manifest (containers, autoscaler, submitter, ...)."""
    if isinstance(node, dict):
        found = [node["image"]] if isinstance(node.get("image"), str) else []
        return found + [i for k, v in node.items() if k != "image" for i in images_in(v)]
    if isinstance(node, list):
        return [i for v in node for i in images_in(v)]
    return []


def env_map(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def dockerfile_tags() -> dict[str, str]:
    """``docker build ... -t TAG`` lines of the Dockerfile header: tag -> the whole build line."""
    tags = {}
    for line in DOCKERFILE.read_text().splitlines():
        if "docker build" in line:
            match = re.search(r"-t\s+(\S+)", line)
            assert match, f"build line without a tag: {line}"
            tags[match.group(1)] = line
    return tags


def dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert match, f"cluster/Dockerfile has no ARG {name}=..."
    return match.group(1)


def project_version() -> str:
    return re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


# ------------------------------------------------------------------------------------- the real CLI parsers
def parse_with(parse, args: list[str], what: str) -> argparse.Namespace:
    """Parse ``args`` with a project parser; a rejected flag fails the test with argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parse(args)
    except SystemExit:
        pytest.fail(f"{what}: the CLI rejects {args}:\n{err.getvalue()}")


def parse_search(args: list[str], what: str) -> argparse.Namespace:
    from gbvnet.search.cli import parse_args

    return parse_with(parse_args, args, what)


def parse_evaluation(args: list[str], what: str) -> argparse.Namespace:
    from gbvnet.evaluation import loso

    return parse_with(loso.build_parser().parse_args, args, what)


def command_args(command: str, program: str) -> list[str] | None:
    """Arguments after ``python <.../tune/search.py>`` (or ``-m tune.search``) or ``python -m evaluation.loso``."""
    tokens = shlex.split(command, comments=True)
    for i, token in enumerate(tokens):
        if program == "tune/search.py" and token.endswith("tune/search.py"):
            rest = tokens[i + 1:]
        elif program == "tune/search.py" and token == "-m" and tokens[i + 1: i + 2] == ["tune.search"]:
            rest = tokens[i + 2:]
        elif program == "evaluation.loso" and token == "-m" and tokens[i + 1: i + 2] == ["evaluation.loso"]:
            rest = tokens[i + 2:]
        else:
            continue
        cut = [j for j, t in enumerate(rest) if t in SHELL_OPERATORS]
        return rest[: cut[0]] if cut else rest
    return None


def readme_commands(*readmes: Path) -> list[str]:
    """Shell commands of the ```bash blocks of ``readmes`` (default: cluster/README.md), continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", "".join(p.read_text() for p in readmes or (README,)), re.S):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            if command.strip() and not command.lstrip().startswith("#"):
                commands.append(command.strip())
    return commands


# ----------------------------------------------------------------------------------------- launcher (AWS)
def test_launcher_validates_against_the_schema_ray_ships():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(load(LAUNCHER), schema)


def test_launcher_survives_rays_own_config_preparation():
    """What `ray up` does before it touches the cloud: merge defaults, check docker and node types."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(LAUNCHER)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["head_start_ray_commands"] == config["head_start_ray_commands"]
    # the image carries every dependency; the only set-up is making the mounted token owner-only
    assert prepared["setup_commands"] == ["chmod 600 ~/.ray/auth_token"]


def test_launcher_nodes_are_private_behind_precreated_groups_with_their_own_profiles():
    """What makes Ray's AWS bootstrap (ray/autoscaler/_private/aws/config.py) skip creating a security group, which
    opens SSH to any address, and attaching its `ray-autoscaler-v1` profile (full EC2 and S3): every node type names
    its groups (`_configure_from_network_interfaces` copies NetworkInterfaces' Groups into SecurityGroupIds, and
    `_configure_security_group` only serves types without them) and the head names its profile
    (`_configure_iam_role`). That module needs boto3, which the test environment lacks, so the conditions are
    checked here directly."""
    config = load(LAUNCHER)
    assert config["provider"]["use_internal_ips"] is True
    for name, node_type in config["available_node_types"].items():
        node = node_type["node_config"]
        assert not {"SecurityGroupIds", "SubnetIds", "SubnetId"} & set(node), f"{name}: give them per interface"
        interfaces = node["NetworkInterfaces"]
        assert interfaces and all(i["AssociatePublicIpAddress"] is False and i["Groups"] and i["SubnetId"]
                                  for i in interfaces), name
    profiles = {n: t["node_config"]["IamInstanceProfile"]["Name"] for n, t in config["available_node_types"].items()}
    assert profiles == {config["head_node_type"]: "gbvnet-ray-head", "ray.worker.gpu": "gbvnet-ray-worker"}


def policy(role: str) -> list[dict]:
    statements = json.loads((CLUSTER / "aws" / f"{role}-policy.json").read_text())["Statement"]
    for st in statements:
        st["Action"] = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        st["Resource"] = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
    return statements


def allowed(statements: list[dict], action: str) -> list[dict]:
    return [st for st in statements if st["Effect"] == "Allow" and action in st["Action"]]


S3_PREFIXES = ("gbvnet/cache", "gbvnet/ray", "gbvnet/results")


@pytest.mark.parametrize("role", ["head", "worker"])
def test_instance_policies_grant_only_what_the_nodes_use(role):
    statements = policy(role)
    actions = [a for st in statements for a in st["Action"]]
    assert not [a for a in actions if "*" in a], "wildcard actions"
    cluster_name = load(LAUNCHER)["cluster_name"]
    listing = allowed(statements, "s3:ListBucket")
    by_prefix = [st for st in listing if "StringLike" in st.get("Condition", {})]
    assert len(by_prefix) == 1 and len(listing) == 2
    prefixes = by_prefix[0]["Condition"]["StringLike"]["s3:prefix"]
    for prefix in S3_PREFIXES:  # existence checks get 404 (not 403) under every prefix the jobs touch
        assert {prefix, f"{prefix}/*"} <= set(prefixes), prefix
    # HeadBucket (no prefix in the request): the other listing statement applies to requests without a prefix only
    assert [st["Condition"] for st in listing if st not in by_prefix] == [{"Null": {"s3:prefix": "true"}}]
    written = {r for st in allowed(statements, "s3:PutObject") for r in st["Resource"]}
    assert written == {"arn:aws:s3:::YOUR_BUCKET/gbvnet/ray/*", "arn:aws:s3:::YOUR_BUCKET/gbvnet/results/*",
                       "arn:aws:s3:::YOUR_BUCKET/gbvnet/"}  # the last: the folder marker pyarrow writes
    if role == "worker":
        assert not [a for a in actions if a.split(":")[0] in ("ec2", "iam", "ssm", "secretsmanager")]
        return
    passing = allowed(statements, "iam:PassRole")
    assert [r for st in passing for r in st["Resource"]] == ["arn:aws:iam::EDIT_ACCOUNT_ID:role/gbvnet-ray-worker"]
    for action in ("ec2:TerminateInstances", "ec2:CreateTags"):
        for st in allowed(statements, action):
            tag = st["Condition"]["StringEquals"]
            assert tag.get("aws:ResourceTag/ray-cluster-name") == cluster_name or \
                tag.get("ec2:CreateAction") == "RunInstances", (action, st["Sid"])
    launch = [st for st in allowed(statements, "ec2:RunInstances") if any(":instance/" in r for r in st["Resource"])]
    assert launch and all(st["Condition"]["StringEquals"]["aws:RequestTag/ray-cluster-name"] == cluster_name
                          for st in launch)
    types = {t["node_config"]["InstanceType"] for t in load(LAUNCHER)["available_node_types"].values()}
    assert all(set(st["Condition"]["StringEquals"]["ec2:InstanceType"]) == types for st in launch), types
    secrets = [r for st in allowed(statements, "secretsmanager:GetSecretValue") for r in st["Resource"]]
    assert secrets == ["arn:aws:secretsmanager:us-west-2:EDIT_ACCOUNT_ID:secret:gbvnet/mlflow-credentials-*"]


def test_every_s3_location_in_the_walkthrough_is_granted():
    texts = [README.read_text()] + [p.read_text() for p in sorted(KUBERAY.glob("*.yaml"))] + [LAUNCHER.read_text()]
    keys = {m.group(1) for t in texts for m in re.finditer(r"s3://YOUR_BUCKET/([\w./-]+)", t)}
    assert keys, "no s3:// locations found"
    ungranted = [k for k in keys if k not in S3_PREFIXES and not k.startswith(tuple(f"{p}/" for p in S3_PREFIXES))]
    assert not ungranted, f"the instance policies grant nothing on {ungranted}"


def test_launcher_head_without_gpu_and_gpu_workers_scaling_from_zero():
    config = load(LAUNCHER)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU") == 0, "training must not land on the head"
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    gpu = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu, "no GPU worker type"
    for name, t in gpu.items():
        assert t["min_workers"] == 0 and t["max_workers"] >= 1, name
        assert t["max_workers"] <= config["max_workers"], name
        assert t["resources"].get("CPU", 0) >= 1, f"{name}: trials need CPUs next to the GPU"


def test_launcher_start_commands_keep_token_auth_and_a_loopback_dashboard():
    config = load(LAUNCHER)
    head = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    workers = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    assert len(head) == 1 and len(workers) == 1
    for command in head + workers:
        before, _, start = command.partition("ray start")
        assert re.search(r"\bRAY_AUTH_MODE=token\b", before), f"token auth off: {command}"
        assert "0.0.0.0" not in command
    tokens = shlex.split(head[0].partition("ray start")[2].replace("=", " "))
    assert "--head" in tokens
    assert tokens[tokens.index("--dashboard-host") + 1] == "127.0.0.1"
    assert "--include-dashboard" not in tokens or tokens[tokens.index("--include-dashboard") + 1] != "false"
    # every node gets the same token, from the submitter's ~/.ray/auth_token (never a literal), owner-only
    assert any(remote.endswith(".ray/auth_token") for remote in config["file_mounts"])
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert "chmod 600 ~/.ray/auth_token" in config["setup_commands"]
    assert any("get-auth-token --generate" in c and "chmod 600 ~/.ray/auth_token" in c for c in readme_commands())


def test_launcher_syncs_no_git_history_venv_or_secrets():
    config = load(LAUNCHER)
    excluded = " ".join(config["rsync_exclude"])
    for name in (".git", ".venv", ".env"):
        assert f"**/{name}" in excluded
    assert ".gitignore" in config.get("rsync_filter", [])  # data/, runs/ and the rest of .gitignore


# ------------------------------------------------------------------------------------------------ KubeRay
def test_raycluster_head_without_gpu_and_autoscaling_gpu_workers():
    rc = raycluster()
    assert rc["apiVersion"] == "ray.io/v1" and rc["metadata"]["name"]
    spec = rc["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head["rayStartParams"].get("num-cpus") == "0", "training must not land on the head"
    head_containers = head["template"]["spec"]["containers"]
    assert head_containers and all("nvidia.com/gpu" not in c.get("resources", {}).get("limits", {})
                                   for c in head_containers)
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if any(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) >= 1
                         for c in g["template"]["spec"]["containers"])]
    assert gpu_groups, "no worker group with nvidia.com/gpu limits"
    for group in spec["workerGroupSpecs"]:
        assert isinstance(group["rayStartParams"], dict) and group["template"]["spec"]["containers"]
    for group in gpu_groups:
        assert group["minReplicas"] == 0 and group["maxReplicas"] >= 1 and group.get("replicas", 0) == 0


def test_raycluster_token_from_a_secret_and_settings_from_the_configmap():
    docs = documents(KUBERAY / "raycluster.yaml")
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    spec = raycluster()["spec"]
    assert spec["authOptions"]["mode"] == "token"
    token_secret = spec["authOptions"]["secretName"]
    containers = [c for _, pod in pod_specs(spec) for c in pod["containers"]]
    containers.append({"name": "autoscaler", **spec["autoscalerOptions"]})
    for container in containers:
        env = env_map(container)
        assert env["RAY_AUTH_MODE"].get("value") == "token", container["name"]
        ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == token_secret and "value" not in env["RAY_AUTH_TOKEN"], container["name"]
    head = env_map(spec["headGroupSpec"]["template"]["spec"]["containers"][0])
    for name in ("GBVNET_STORAGE", "MLFLOW_TRACKING_URI"):
        ref = head[name]["valueFrom"]["configMapKeyRef"]
        assert ref["name"] == configmap["metadata"]["name"] and ref["key"] in configmap["data"], name
    assert not {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} & set(head), "a file, not env vars"


def test_each_container_gets_only_the_environment_it_uses():
    """Workers and job submitters only join / reach the cluster: the Ray token, no storage or MLflow settings."""
    spec = raycluster()["spec"]
    containers = [c for _, pod in pod_specs(spec)[1:] for c in pod["containers"]]
    containers += [c for f in ("rayjob-search.yaml", "rayjob-loso.yaml")
                   for c in rayjob(f)["spec"]["submitterPodTemplate"]["spec"]["containers"]]
    for container in containers:
        assert set(env_map(container)) == {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}, container["name"]


@pytest.mark.parametrize("filename", ["rayjob-search.yaml", "rayjob-loso.yaml"])
def test_rayjobs_target_the_raycluster_and_submit_with_the_token(filename):
    job = rayjob(filename)
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert isinstance(spec["entrypoint"], str) and spec["entrypoint"].strip()
    assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec)
    if "clusterSelector" in spec:
        assert spec["clusterSelector"] == {"ray.io/cluster": raycluster()["metadata"]["name"]}
        assert not spec.get("shutdownAfterJobFinishes"), "would delete the shared cluster"
    token_secret = raycluster()["spec"]["authOptions"]["secretName"]
    for container in spec["submitterPodTemplate"]["spec"]["containers"]:
        env = env_map(container)
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == token_secret


def test_search_rayjob_runs_tune_search_with_flags_its_parser_accepts():
    args = command_args(rayjob("rayjob-search.yaml")["spec"]["entrypoint"], "tune/search.py")
    assert args is not None, "the search RayJob does not run tune/search.py"
    parsed = parse_search(args, "rayjob-search.yaml")
    assert parsed.cache.startswith("s3://") and parsed.gpus_per_worker >= 1
    assert parsed.output.startswith("s3://YOUR_BUCKET/gbvnet/results/")  # survives a head restart


def test_loso_rayjob_evaluates_the_searched_config_on_unsearched_subjects():
    search = parse_search(command_args(rayjob("rayjob-search.yaml")["spec"]["entrypoint"], "tune/search.py"),
                          "rayjob-search.yaml")
    args = command_args(rayjob("rayjob-loso.yaml")["spec"]["entrypoint"], "evaluation.loso")
    assert args is not None, "the evaluation RayJob does not run python -m evaluation.loso"
    loso = parse_evaluation(args, "rayjob-loso.yaml")
    assert loso.config == search.output
    assert (loso.dataset, loso.cache, loso.target, loso.modality) == (
        search.dataset, search.cache, search.target, search.modality)
    assert loso.only_test_subjects and not set(loso.only_test_subjects) & set(search.search_subjects)
    assert loso.output.startswith("s3://YOUR_BUCKET/gbvnet/results/")


def mounts_in(node) -> list[dict]:
    """Every volumeMount named anywhere in a manifest."""
    if isinstance(node, dict):
        return list(node.get("volumeMounts", [])) + [m for k, v in node.items() for m in mounts_in(v)]
    if isinstance(node, list):
        return [m for v in node for m in mounts_in(v)]
    return []


def test_no_pod_local_state_configs_and_results_go_through_storage():
    """A head restart loses nothing: no pod volume holds results (only read-only secrets and the API token are
    mounted); the jobs pass configs and results by URI."""
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in documents(path):
            assert "emptyDir" not in json.dumps(doc) and "persistentVolumeClaim" not in json.dumps(doc), path.name
            assert all(m["readOnly"] is True for m in mounts_in(doc)), path.name


def all_pod_templates() -> list[tuple[str, dict]]:
    """(where, pod template) of every pod the manifests create: head, worker groups, job submitters."""
    spec = raycluster()["spec"]
    out = [("head", spec["headGroupSpec"]["template"])]
    out += [(g["groupName"], g["template"]) for g in spec["workerGroupSpecs"]]
    out += [(f, rayjob(f)["spec"]["submitterPodTemplate"]) for f in ("rayjob-search.yaml", "rayjob-loso.yaml")]
    return out


def test_pods_meet_the_restricted_pod_security_standard():
    spec = raycluster()["spec"]
    for where, template in all_pod_templates():
        pod = template["spec"]
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0, where
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault", where
        # no automatic API token anywhere; the head's autoscaler sidecar mounts its own (test below)
        assert pod["automountServiceAccountToken"] is False, where
        containers = pod["containers"] + ([spec["autoscalerOptions"]] if where == "head" else [])
        for container in containers:
            c = container["securityContext"]
            assert c["allowPrivilegeEscalation"] is False and c["capabilities"]["drop"] == ["ALL"], where
            assert not c.get("privileged") and not c.get("runAsUser") == 0, where


def test_only_the_autoscaler_gets_the_kubernetes_api_token():
    spec = raycluster()["spec"]
    head = spec["headGroupSpec"]["template"]["spec"]
    volume = next(v for v in head["volumes"] if v["name"] == "kube-api-access")
    assert any("serviceAccountToken" in source for source in volume["projected"]["sources"])
    token_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert [m["mountPath"] for m in spec["autoscalerOptions"]["volumeMounts"]] == [token_dir]
    for where, template in all_pod_templates():
        for container in template["spec"]["containers"]:
            assert not [m for m in container.get("volumeMounts", []) if m["name"] == "kube-api-access"], where


def test_namespace_is_labelled_restricted():
    commands = readme_commands()
    order = [next(i for i, c in enumerate(commands) if c.startswith(prefix)) for prefix in (
        "kubectl create namespace gbvnet", "kubectl label namespace gbvnet pod-security.kubernetes.io/enforce="
        "restricted", "kubectl config set-context --current --namespace gbvnet", "kubectl create secret",
        "kubectl apply -f cluster/kuberay/raycluster.yaml")]
    assert order == sorted(order), order


def test_kubectl_waits_before_port_forward_and_logs():
    """Blocker: port-forward / logs right after apply, before the Service, pod or Job exist."""
    commands = readme_commands()
    cluster_name = raycluster()["metadata"]["name"]
    for i, command in enumerate(commands):
        if command.startswith("kubectl port-forward"):
            assert f"svc/{cluster_name}-head-svc" in command
            assert any(c.startswith("kubectl wait --for=jsonpath='{.status.state}'=ready")
                       and f"raycluster/{cluster_name}" in c for c in commands[:i]), command
        if command.startswith("kubectl logs"):
            job = re.search(r"job/(\S+)", command).group(1)
            assert job in {rayjob(f)["metadata"]["name"] for f in ("rayjob-search.yaml", "rayjob-loso.yaml")}
            assert commands[i - 1].startswith(f"kubectl wait --for=create job/{job} "), command
            assert "--pod-running-timeout" in command
    for filename in ("raycluster.yaml", "rayjob-search.yaml", "rayjob-loso.yaml"):
        header = (KUBERAY / filename).read_text().split("\napiVersion", 1)[0]
        assert "kubectl wait" in header or "kubectl logs" not in header and "port-forward" not in header, filename


def test_network_policy_fences_every_pod_of_the_cluster():
    policy_doc = kuberay("NetworkPolicy", "raycluster.yaml")
    for rule in policy_doc["spec"]["egress"]:
        assert rule.get("to"), "an egress rule without 'to' lets the pods reach any address"
    operator = [peer for rule in policy_doc["spec"]["ingress"] for peer in rule["from"] if "namespaceSelector" in peer]
    assert operator[0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}
    assert any("-l app.kubernetes.io/name=kuberay-operator" in c for c in readme_commands())
    selector = policy_doc["spec"]["podSelector"]["matchLabels"]
    assert set(policy_doc["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for where, template in all_pod_templates():
        labels = template["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"{where} is outside the network policy"
    for rule in policy_doc["spec"]["ingress"]:
        assert rule.get("from"), "an ingress rule without 'from' admits every pod of the cluster"
    assert raycluster()["spec"]["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"


def test_pods_get_s3_from_pod_identity_through_the_network_policy():
    """Blocker: egress only to 10.0.0.0/8 on 443, no identity step. Now the ServiceAccount's role comes from an EKS
    Pod Identity association, the pods may reach the agent, and S3's ranges come with a second, fail-closed policy."""
    trust = json.loads((CLUSTER / "aws" / "pod-identity-trust.json").read_text())["Statement"]
    assert [(s["Principal"], sorted(s["Action"])) for s in trust] == [
        ({"Service": "pods.eks.amazonaws.com"}, ["sts:AssumeRole", "sts:TagSession"])]
    account = next(d for d in documents(KUBERAY / "raycluster.yaml") if d["kind"] == "ServiceAccount")["metadata"]
    assert {t["spec"]["serviceAccountName"] for _, t in all_pod_templates()[:2]} == {account["name"]}
    association = next(c for c in readme_commands() if c.startswith("aws eks create-pod-identity-association"))
    assert f"--namespace gbvnet --service-account {account['name']} " in association
    egress = kuberay("NetworkPolicy", "raycluster.yaml")["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "169.254.170.23/32"}}], "ports": [{"protocol": "TCP", "port": 80}]} in egress
    s3 = kuberay("NetworkPolicy", "s3-egress.yaml")["spec"]
    assert s3["podSelector"] == kuberay("NetworkPolicy", "raycluster.yaml")["spec"]["podSelector"]
    assert s3["egress"] == [{"ports": [{"protocol": "TCP", "port": 443}], "to": [{"ipBlock": {"cidr": "192.0.2.1/32"}}]}]


# ----------------------------------------------------------------------------------- one image everywhere
def test_one_image_everywhere_built_by_the_dockerfile():
    manifests = [documents(p) for p in sorted(KUBERAY.glob("*.yaml"))]
    images = {i for docs in manifests for i in images_in(docs)}
    launcher_docker = load(LAUNCHER)["docker"]
    images |= {launcher_docker[k] for k in ("image", "head_image", "worker_image") if k in launcher_docker}
    assert len(images) == 1, f"different images: {sorted(images)}"
    image, _, digest = images.pop().partition("@")
    assert digest == "sha256:EDIT_IMAGE_DIGEST", "name the pushed image by digest (cluster/README.md step 1)"
    tags = dockerfile_tags()
    assert image in tags, f"{image} is not built by cluster/Dockerfile (tags: {sorted(tags)})"
    assert "whl/cu" in tags[image], "the cluster image must be the CUDA build (GPU workers)"
    assert image.rsplit(":", 1)[1].startswith(project_version() + "-")
    ray_version = dockerfile_arg("RAY_VERSION")
    assert raycluster()["spec"]["rayVersion"] == ray_version
    for filename in ("rayjob-search.yaml", "rayjob-loso.yaml"):
        cluster_spec = rayjob(filename)["spec"].get("rayClusterSpec")
        if cluster_spec:
            assert cluster_spec["rayVersion"] == ray_version


def test_dockerfile_python311_cpu_torch_by_default_cuda_by_build_arg():
    text = DOCKERFILE.read_text()
    assert dockerfile_arg("BASE_IMAGE").startswith("python:3.11-") and re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert dockerfile_arg("TORCH_INDEX_URL").endswith("/whl/cpu")
    assert re.search(r'--index-url "?\$\{TORCH_INDEX_URL\}"? torch torchvision', text)
    assert re.search(r"pip install [^\n]*ray\[default,tune,train\]==\$\{RAY_VERSION\}[^\n]* \.", text)
    assert re.search(r"^USER ray$", text, re.M), "the image must not run as root"
    # the launcher resolves `~` (the token's file mount) with the container's $HOME
    assert re.search(r"^\s+HOME=/home/ray\s*$", text, re.M) and "--home-dir /home/ray" in text
    rules = [r for r in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
             if r.strip() and not r.startswith("#")]
    assert rules[0] == "**", "the build context is an allow-list (keeps .venv, .git, data/ and .env out)"
    assert "!cluster/constraints.txt" in rules


def constraints() -> dict[str, str]:
    pins = {}
    for line in (CLUSTER / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"cluster/constraints.txt: not pinned: {line}"
            pins[name.lower()] = version
    return pins


def test_image_python_packages_are_pinned_by_the_constraints():
    text = DOCKERFILE.read_text()
    installs = re.findall(r"pip install ([^\n]*)", text)
    assert installs and all("-c /tmp/constraints.txt" in i for i in installs), installs
    pins = constraints()
    assert pins["ray"] == dockerfile_arg("RAY_VERSION")
    for name in ("torch", "torchvision", "mlflow", "timm", "numpy", "pyarrow", "boto3"):
        assert name in pins, f"{name} is not pinned"
    mlflow_server = (CLUSTER / "mlflow" / "Dockerfile").read_text()
    assert re.search(rf"^ARG MLFLOW_VERSION={re.escape(pins['mlflow'])}$", mlflow_server, re.M)
    import mlflow
    import ray
    import torch

    installed = {"ray": ray.__version__, "mlflow": mlflow.__version__, "torch": torch.__version__.split("+")[0]}
    assert {k: pins[k] for k in installed} == installed, "constraints differ from the tested environment"


# ------------------------------------------------------------------------------------ job runtime env
def test_runtime_env_excludes_are_anchored_and_spare_the_package():
    from ray._private.runtime_env.packaging import _get_excludes  # the matcher `ray job submit` uses
    from ray.runtime_env import RuntimeEnv

    env = load(RUNTIME_ENV)
    RuntimeEnv(**env)  # Ray's own validation of the fields
    excludes = env["excludes"]
    unanchored = [p for p in excludes if not p.startswith(("/", "**/"))]
    assert not unanchored, f"unanchored excludes also match inside packages (e.g. gbvnet/data): {unanchored}"
    excluded = _get_excludes(REPO, excludes)
    for path in (".git", ".venv", "data", "runs", "mlruns", "gbvnet/__pycache__", "cluster/mlflow/.env"):
        assert excluded(REPO / path), path
    for path in ("gbvnet/data", "gbvnet/data/cache.py", "gbvnet/data/registry.py", "tune/search.py",
                 "cluster/runtime_env.yaml", "pyproject.toml"):
        assert not excluded(REPO / path), path
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    assert not [k for k in env["env_vars"] if re.search(r"(?i)key|secret|token|password|credential", k)]


def test_runtime_env_upload_is_small_and_complete():
    """What `--working-dir .` would upload with these excludes alone (.gitignore not even applied)."""
    from ray._private.runtime_env.packaging import _get_excludes

    excluded = _get_excludes(REPO, load(RUNTIME_ENV)["excludes"])
    total, files = 0, set()
    for root, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if not excluded(Path(root) / d)]
        for name in names:
            path = Path(root) / name
            if not excluded(path) and path.is_file():
                total += path.stat().st_size
                files.add(path.relative_to(REPO).as_posix())
    assert total < 100 * 2**20, f"upload of {total / 2**20:.0f} MiB"
    assert {"gbvnet/data/cache.py", "gbvnet/train/loop.py", "tune/search.py", "evaluation/loso.py"} <= files


# ------------------------------------------------------------------------------------------- MLflow stack
def test_mlflow_stack_postgres_backend_s3_artifacts_loopback_by_default():
    services = load(COMPOSE)["services"]
    mlflow = services["mlflow"]
    command = mlflow["command"]
    command = command if isinstance(command, list) else shlex.split(command)
    assert command[:2] == ["mlflow", "server"] and "--serve-artifacts" in command
    assert command[command.index("--artifacts-destination") + 1].startswith("s3://")
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert mlflow["ports"] == ["${MLFLOW_BIND:-127.0.0.1}:${MLFLOW_PORT:-5000}:5000"]
    for name, service in services.items():
        if name == "tls-proxy":  # TLS on 443 in front of MLflow, started only with the "tls" profile
            assert service["profiles"] == ["tls"] and [p.rsplit(":", 2)[1:] for p in service["ports"]] == [
                ["443", "443"]]
        elif name != "mlflow":
            assert "ports" not in service, f"{name} must not be published"
    env_example = (CLUSTER / "mlflow" / ".env.example").read_text()
    assert re.search(r"^MLFLOW_BIND=127\.0\.0\.1$", env_example, re.M)


def test_mlflow_credentials_only_from_an_uncommitted_env_file():
    services = load(COMPOSE)["services"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"(?i)password|secret|_KEY", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), f"{name}.{key} is not taken from .env"
    for line in (CLUSTER / "mlflow" / ".env.example").read_text().splitlines():
        key, _, value = line.partition("=")
        if not line.startswith("#") and re.search(r"(?i)password|secret", key):
            assert value == "", f".env.example carries a value for {key}"
    assert ".env" in (CLUSTER / "mlflow" / ".gitignore").read_text().split()
    if shutil.which("git") and (REPO / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", "cluster/mlflow/.env"], cwd=REPO)
        assert ignored.returncode == 0, "cluster/mlflow/.env is not git-ignored"


def test_mlflow_authenticates_with_an_admin_password_and_keeps_users_on_a_volume():
    compose = load(COMPOSE)
    mlflow = compose["services"]["mlflow"]
    command = mlflow["command"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    env = mlflow["environment"]
    for key, var in (("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_ADMIN_PASSWORD"),
                     ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_FLASK_SECRET_KEY")):
        assert re.fullmatch(rf"\$\{{{var}:\?[^}}]*\}}", env[key]), key  # required, from .env
        assert re.search(rf"^{var}=$", (CLUSTER / "mlflow" / ".env.example").read_text(), re.M), var
    mounts = dict(m.rsplit(":", 2)[:2] if m.endswith(":ro") else m.split(":", 1) for m in mlflow["volumes"])
    assert mounts["./basic_auth.ini"] == env["MLFLOW_AUTH_CONFIG_PATH"]
    # the file as mlflow.server.auth.config reads it (configparser, section [mlflow]); importing that module needs
    # Flask-WTF (mlflow[auth], installed in the server image only): no password in it, users on a named volume
    auth = configparser.ConfigParser()
    auth.read(CLUSTER / "mlflow" / "basic_auth.ini")
    assert "admin_password" not in auth["mlflow"] and auth["mlflow"]["admin_username"] == "admin"
    database = auth["mlflow"]["database_uri"].removeprefix("sqlite:///")
    volume = [name for name, target in mounts.items() if database.startswith(target.rstrip("/") + "/")]
    assert volume and volume[0] in compose["volumes"], f"{database} is not on a named volume"
    assert re.search(r'"mlflow\[auth\]==\$\{MLFLOW_VERSION\}"', (CLUSTER / "mlflow" / "Dockerfile").read_text())


def test_docker_compose_accepts_the_mlflow_stack_and_refuses_missing_secrets(tmp_path):
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode:
        pytest.skip("Docker Compose is not installed")
    values = {}
    for line in (CLUSTER / "mlflow" / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value or "x" * 24

    def config(env: dict) -> subprocess.CompletedProcess:
        env_file = tmp_path / ".env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        return subprocess.run([docker, "compose", "-f", str(COMPOSE), "--env-file", str(env_file), "config",
                               "--quiet"], capture_output=True, text=True, timeout=60)

    ok = config(values)
    assert ok.returncode == 0, ok.stderr
    refused = config({**values, "MLFLOW_ADMIN_PASSWORD": ""})
    assert refused.returncode != 0 and "MLFLOW_ADMIN_PASSWORD" in refused.stderr


# ----------------------------------------------------------------------------------------- no secrets
SECRET_KEY = re.compile(r"(?i)(password|passwd|secret[_-]?(access[_-]?)?key|api[_-]?key|auth[_-]?token"
                        r"|access[_-]?token|private[_-]?key)")
REFERENCE = re.compile(r"^\s*['\"]?(\$|<|YOUR_|CHANGE)")  # ${VAR}, $(cmd), <placeholder>


def cluster_text_files() -> list[Path]:
    return [p for p in sorted(CLUSTER.rglob("*")) if p.is_file() and p.name != ".env"
            and p.suffix not in {".pyc"} and "__pycache__" not in p.parts]


def test_no_literal_secrets_in_cluster_files():
    problems = []
    for path in cluster_text_files():
        text = path.read_text()
        rel = path.relative_to(REPO)
        if re.search(r"\bAKIA[0-9A-Z]{16}\b", text):
            problems.append(f"{rel}: AWS access key id")
        if re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
            problems.append(f"{rel}: private key")
        for match in re.finditer(r"://[^/\s:@'\"]+:([^@\s'\"/]+)@", text):
            if not REFERENCE.match(match.group(1)):
                problems.append(f"{rel}: password in a URL ({match.group(0)})")
        for line in text.splitlines():
            assignment = re.search(r"(?:^|[\s;])(?:export\s+|ENV\s+)?([A-Za-z_][\w.-]*)\s*[=:]\s*(\S.*)?$", line)
            if not assignment or not SECRET_KEY.search(assignment.group(1)) \
                    or assignment.group(1).endswith(("_PATH", "_FILE")):  # where a secret lives, not the secret
                continue
            value = (assignment.group(2) or "").strip()
            if value and not REFERENCE.match(value) and not value.startswith(("{", "#")):
                problems.append(f"{rel}: literal value for {assignment.group(1)}: {line.strip()}")
    assert not problems, "\n".join(problems)


def env_entries(node, where: str):
    """(location, entry) of every ``{name: ..., value/valueFrom: ...}`` mapping in a manifest."""
    if isinstance(node, dict):
        if "name" in node and ("value" in node or "valueFrom" in node):
            yield where, node
        for k, v in node.items():
            yield from env_entries(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from env_entries(v, f"{where}[{i}]")


def test_secret_env_vars_in_manifests_are_references():
    for path in sorted(KUBERAY.glob("*.yaml")):
        for where, entry in env_entries(documents(path), path.name):
            if SECRET_KEY.search(str(entry["name"])):
                assert "value" not in entry, f"{where}: {entry['name']} has a literal value"
        assert "kind: Secret" not in path.read_text(), f"{path.name}: Secrets are created with kubectl, not files"


# --------------------------------------------------------------------------------------------- README
def test_readme_commands_use_flags_the_parsers_accept():
    commands = readme_commands(*READMES)
    checked = 0
    for command in commands:
        for program, parse in (("tune/search.py", parse_search), ("evaluation.loso", parse_evaluation)):
            args = command_args(command, program)
            if args is not None:
                parse(args, f"cluster/README.md: {command}")
                checked += 1
    assert checked >= 4, f"expected search and evaluation commands in cluster/README.md, checked {checked}"


def test_readme_local_cluster_section_keeps_the_security_defaults():
    text = README.read_text()
    for heading in ("Local 2-node cluster on one machine", "What changes on a cloud", "Security defaults"):
        assert re.search(rf"^#+ {re.escape(heading)}", text, re.M), heading
    # the nodes are started by the Slurm recipe's script (loopback dashboard, token auth: test_sbatch_...)
    heads = [c for c in readme_commands() if "cluster/slurm/start-node.sh head" in c]
    assert heads and not [c for c in readme_commands() if c.startswith("ray start") or c.startswith("ray stop")]
    assert "export RAY_AUTH_MODE=token" in text


# ------------------------------------------------------------------------ every README command is checked
def check_table() -> list[tuple[str, str]]:
    """(command prefix, how it is checked) rows of the last table of cluster/README.md."""
    section = README.read_text().split("## How each command of this page is checked", 1)[1]
    rows = re.findall(r"^\| `([^`]+)` \| (.+) \|$", section, re.M)
    assert rows, "no check table at the end of cluster/README.md"
    return rows


def test_every_readme_command_is_in_the_check_table():
    rows = check_table()
    unmatched = [c for c in readme_commands(*READMES) if not any(c.startswith(prefix) for prefix, _ in rows)]
    assert not unmatched, "commands without a row in the check table:\n" + "\n".join(unmatched)
    tests = {f"{p.relative_to(REPO).as_posix()}::{name}" for p in (REPO / "tests").glob("test_*.py")
             for name in re.findall(r"^def (test_\w+)", p.read_text(), re.M)}
    for prefix, how in rows:
        for named in re.findall(r"tests/\w+\.py::\w+", how):
            assert named in tests, f"{prefix}: {named} does not exist"


def run_bash(script: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], env={**os.environ, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_sed_substitutions_reach_every_placeholder(tmp_path):
    """The README's `sed` lines, run on a copy of cluster/: every placeholder replaced, the files still parse; the
    image's line, rerun after another push, names the new digest (it once replaced the placeholder only)."""
    shutil.copytree(CLUSTER, tmp_path / "cluster", ignore=shutil.ignore_patterns("mlflow", "__pycache__"))
    values = {"REGISTRY": "123456789012.dkr.ecr.eu-central-1.amazonaws.com", "DIGEST": "sha256:" + "a" * 64,
              "SG": "sg-0123456789abcdef1", "SUBNET": "subnet-0123456789abcdef2", "AMI": "ami-0123456789abcdef3",
              "ACCOUNT": "123456789012", "BUCKET": "my-gbvnet-bucket", "OPERATOR_NS": "ray-system",
              "REGION": "eu-central-1"}
    seds = [c for c in readme_commands() if c.startswith("sed -i") and "$OLD_AMI" not in c]
    assert len(seds) == 3, seds  # the image, the launcher's ids, the KubeRay namespace and bucket
    for command in seds:
        done = run_bash(command, values, tmp_path)
        assert done.returncode == 0, done.stderr
    files = [tmp_path / "cluster" / "gbvnet-gpu.yaml", *sorted((tmp_path / "cluster" / "aws").glob("*.json")),
             *sorted((tmp_path / "cluster" / "kuberay").glob("*.yaml"))]
    for path in files:
        text = path.read_text()
        left = re.findall(r"EDIT_\w+|YOUR_BUCKET|registry\.example\.com|kuberay-system|us-west-2", text)
        assert not left, f"{path.name}: {sorted(set(left))} left after the README's sed"
        json.loads(text) if path.suffix == ".json" else [*yaml.safe_load_all(text)]
    launcher = load(tmp_path / "cluster" / "gbvnet-gpu.yaml")
    assert launcher["docker"]["image"] == f"{values['REGISTRY']}/gbvnet/gbvnet:0.1.0-cu130@{values['DIGEST']}"
    assert launcher["initialization_commands"][0].endswith(f"--password-stdin {values['REGISTRY']}")
    assert launcher["provider"]["region"] == values["REGION"]
    head = json.loads((tmp_path / "cluster" / "aws" / "head-policy.json").read_text())
    assert f"arn:aws:ec2:{values['REGION']}::image/{values['AMI']}" in json.dumps(head)
    pushed_again = "sha256:" + "c" * 64
    assert run_bash(seds[0], {**values, "DIGEST": pushed_again}, tmp_path).returncode == 0
    images = {i for p in files if p.suffix == ".yaml" for i in images_in([*yaml.safe_load_all(p.read_text())])}
    assert images == {f"{values['REGISTRY']}/gbvnet/gbvnet:0.1.0-cu130@{pushed_again}"}


def test_every_aws_command_names_its_region():
    commands = [c for c in readme_commands(*READMES) for part in c.split("|")
                if re.match(r"\s*(\w+=\$\()?aws ", part)]
    assert commands
    assert not [c for c in commands if "--region $REGION" not in c], "a command without --region"


def test_no_secret_on_a_command_line():
    """Other users of a host see every process's arguments: secrets reach kubectl, curl and the AWS CLI as files
    or standard input, never as arguments."""
    mlflow_readme = CLUSTER / "mlflow" / "README.md"
    commands = readme_commands(*READMES, mlflow_readme)
    assert not [c for c in commands if "--from-literal" in c or re.search(r"curl [^|]*-u ", c)]
    for c in commands:
        for name in ("MLFLOW_RAY_PASSWORD", "MLFLOW_ADMIN_PASSWORD"):
            if f"${name}" in c or f"${{{name}" in c:  # used: only by printf, a builtin, into a file or a pipe
                assert re.search(rf"printf '[^']*' \"\$\{{?{name}", c), c
    writers = [c for c in commands if "mlflow_tracking_password" in c and "secret" in c]
    assert writers and all("${MLFLOW_RAY_PASSWORD:?" in c for c in writers), "an unset password must stop them"
    create = next(c for c in readme_commands(mlflow_readme) if "users/create" in c)
    assert "curl --fail-with-body" in create and "-K -" in create
    assert readme_commands(mlflow_readme).index(create) > next(
        i for i, c in enumerate(readme_commands(mlflow_readme)) if c.startswith("MLFLOW_ADMIN_PASSWORD=$(sed"))


def test_allowed_hosts_of_the_mlflow_readme_admit_the_tunnel_and_the_proxy():
    """Blocker: the TLS recipe's MLFLOW_ALLOWED_HOSTS rejected http://127.0.0.1:5000, the address the README opens.
    Checked with MLflow's own Host check."""
    from mlflow.server.security_utils import is_allowed_host_header

    text = (CLUSTER / "mlflow" / "README.md").read_text() + (CLUSTER / "mlflow" / ".env.example").read_text()
    values = set(re.findall(r"MLFLOW_ALLOWED_HOSTS=([\w.:,-]+)", text))
    assert values
    for value in values:
        hosts = value.split(",")
        proxy = hosts[0]
        for host in (proxy, "127.0.0.1:5000", "localhost:5000"):
            assert is_allowed_host_header(hosts, host), (value, host)
        assert not is_allowed_host_header(hosts, "evil.example.com"), value


def test_caddy_without_capabilities_reads_a_root_owned_key_only(tmp_path):
    """Caddy runs as root with `cap_drop: ALL`: no CAP_DAC_OVERRIDE, so it reads a 0600 key only as its owner.
    A root process without capabilities (setpriv) reads the key the README installs, and not one of another user."""
    compose = load(COMPOSE)["services"]["tls-proxy"]
    assert compose["cap_drop"] == ["ALL"] and compose["cap_add"] == ["NET_BIND_SERVICE"]
    install = next(c for c in readme_commands(CLUSTER / "mlflow" / "README.md") if "key.pem" in c)
    assert "-o root -g root -m 600" in install
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop capabilities")
    for owner, readable in ((0, True), (1000, False)):
        key = tmp_path / f"key-{owner}.pem"
        key.write_text("key")
        os.chown(key, owner, owner)
        key.chmod(0o600)
        read = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", "cat", str(key)],
                              capture_output=True, text=True)
        assert (read.returncode == 0) == readable, (owner, read.stderr)


def test_aws_setup_creates_then_substitutes_then_uploads():
    """Blocker: the policies were uploaded before the security group id was written into them."""
    commands = readme_commands()

    def first(prefix: str) -> int:
        found = [i for i, c in enumerate(commands) if c.startswith(prefix)]
        assert found, prefix
        return found[0]

    sed = next(i for i, c in enumerate(commands) if c.startswith("sed -i") and "sg-EDIT_RAY_NODES" in c)
    assert first("SG=$(aws ec2 create-security-group") < first("AMI=$(aws ssm get-parameter") < sed
    assert sed < first("aws iam put-role-policy") < first("aws secretsmanager create-secret")
    for name in ("SG", "SUBNET", "AMI", "ACCOUNT", "BUCKET"):
        assert f"${name}/g" in commands[sed], name
    for path in ("cluster/aws/ec2-trust.json", "cluster/aws/head-policy.json", "cluster/aws/worker-policy.json"):
        assert (REPO / path).is_file(), path


def test_launcher_pins_the_ami_and_the_image_by_id_and_digest():
    config = load(LAUNCHER)
    amis = {t["node_config"]["ImageId"] for t in config["available_node_types"].values()}
    assert amis == {"ami-EDIT_DLAMI"}, "pin the AMI by id (a resolve:ssm:.../latest floats)"
    lookup = next(c for c in readme_commands() if c.startswith("AMI=$(aws ssm get-parameter"))
    assert "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id" in lookup
    assert "@sha256:" in config["docker"]["image"]
    # blocker: `docker pull` from a private registry needs a login on the host first
    registry = config["docker"]["image"].split("/", 1)[0]
    assert config["initialization_commands"] == [
        f"aws ecr get-login-password --region {config['provider']['region']} | docker login --username AWS "
        f"--password-stdin {registry}"]


def test_token_generation_ignores_a_leftover_token_path(tmp_path):
    """Blocker: a RAY_AUTH_TOKEN_PATH left exported by the local walkthrough made `--generate` fail."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    if ray is None:
        pytest.skip("no ray CLI next to python")
    command = next(c for c in readme_commands() if "get-auth-token --generate" in c).split("#")[0]
    env = {"HOME": str(tmp_path), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "gone" / "auth_token"),
           "PATH": f"{Path(ray).parent}{os.pathsep}{os.environ['PATH']}"}
    done = run_bash(command, env, tmp_path)
    assert done.returncode == 0, done.stderr
    token = tmp_path / ".ray" / "auth_token"
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) >= 32
    assert token.read_text().strip() not in done.stdout + done.stderr, "the token was printed"


def test_mlflow_credentials_reach_the_head_only_as_a_file(tmp_path, monkeypatch):
    """Blocker / hole: the MLflow user came from `env_vars` (stored with the job, given to every worker) or an
    undefined variable; now it is MLflow's credentials file, written from a secret store on the head only."""
    from mlflow.utils.credentials import read_mlflow_creds

    writers = [c for c in readme_commands(*READMES) if "mlflow_tracking_password" in c]
    assert len(writers) == 3, writers  # AWS Secrets Manager, the Kubernetes Secret, the Slurm user's own file
    formats = {re.search(r"printf '([^']+)'", c).group(1) for c in writers}
    assert len(formats) == 1
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".mlflow").mkdir()
    done = run_bash(f"printf '{formats.pop()}' \"$MLFLOW_RAY_PASSWORD\" > ~/.mlflow/credentials",
                    {"HOME": str(tmp_path), "MLFLOW_RAY_PASSWORD": "s3cr3t"}, tmp_path)
    assert done.returncode == 0, done.stderr
    creds = read_mlflow_creds()
    assert (creds.username, creds.password) == ("gbvnet-ray", "s3cr3t")
    assert "MLFLOW_RAY_PASSWORD=$(openssl rand" in (CLUSTER / "mlflow" / "README.md").read_text()
    # launcher: the head reads the secret the README creates; the head's role may read it, the worker's not
    secret = re.search(r"--name (\S+)", next(c for c in writers if "secretsmanager" in c)).group(1)
    head_setup = " ".join(load(LAUNCHER)["head_setup_commands"])
    assert f"SecretId='{secret}'" in head_setup and "umask 077" in head_setup and "~/.mlflow/credentials" in head_setup
    assert not load(LAUNCHER)["worker_setup_commands"] and "mlflow" not in " ".join(load(LAUNCHER)["setup_commands"])
    # KubeRay: the Secret's file, mounted read-only into the head's Ray container only
    spec = raycluster()["spec"]
    head = spec["headGroupSpec"]["template"]["spec"]
    volume = next(v for v in head["volumes"] if v["name"] == "mlflow-credentials")
    assert volume["secret"]["secretName"] == "gbvnet-mlflow-auth" and volume["secret"]["items"] == [
        {"key": "credentials", "path": "credentials"}]
    assert "--from-file=credentials=" in next(c for c in writers if "gbvnet-mlflow-auth" in c)
    mounts = [(where, m) for where, t in all_pod_templates() for c in t["spec"]["containers"]
              for m in c.get("volumeMounts", []) if m["name"] == "mlflow-credentials"]
    assert [(w, m["mountPath"]) for w, m in mounts] == [("head", "/home/ray/.mlflow")]
    assert not [k for k in load(RUNTIME_ENV)["env_vars"] if k.startswith("MLFLOW")]


# ------------------------------------------------------------------------------------------------- Slurm
def test_sbatch_starts_every_node_with_start_node():
    """The sbatch recipe starts its nodes with start-node.sh, the script tests/test_cluster_jobs.py runs."""
    sbatch, start = SLURM / "gbvnet.sbatch", SLURM / "start-node.sh"
    for script in (sbatch, start):
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    text = sbatch.read_text()
    sruns = [line.strip() for line in text.splitlines() if line.strip().startswith("srun ")]
    assert [re.search(r"start-node\.sh (\w+)", s).group(1) for s in sruns] == ["head", "worker"]
    assert all("cluster/slurm/start-node.sh" in s for s in sruns)
    # each node's step asks for the job's CPUs (srun no longer inherits --cpus-per-task) and GPUs, exactly those
    step = re.search(r"^step=\((.*)\)$", text, re.M).group(1)
    assert "--cpus-per-task=\"$SLURM_CPUS_PER_TASK\"" in step and "--exclusive" in step
    assert "step+=(--gpus-per-task=\"$SLURM_GPUS_PER_TASK\")" in text
    assert all(s.startswith('srun "${step[@]}"') for s in sruns)
    assert re.search(r"^umask 077$", text, re.M) and "unset RAY_AUTH_TOKEN" in text
    assert re.search(r'^ray job submit --address "\$RAY_API_SERVER_ADDRESS" --runtime-env cluster/runtime_env.yaml '
                     r'--working-dir \. -- "\$@"$', text, re.M), "the driver runs as a Ray job"
    assert re.search(r"^export RAY_AUTH_MODE=token$", text, re.M) and "umask 077" in text
    assert "ray stop" not in text and "ray stop" not in start.read_text(), "stops other jobs' Ray on the node"
    assert re.search(r"^#SBATCH --output=gbvnet-%j\.out$", text, re.M)
    starting = start.read_text()
    assert "--dashboard-host 127.0.0.1" in starting and "export RAY_AUTH_MODE=token" in starting
    assert "SLURM_GPUS_ON_NODE:-0" in starting and "SLURM_CPUS_PER_TASK" in starting
    for flag in ("--node-manager-port", "--object-manager-port", "--min-worker-port", "--max-worker-port"):
        assert flag in starting, f"{flag}: every port pinned, so jobs can share a node"
    assert "cluster\" / \"slurm\" / \"start-node.sh" in (REPO / "tests" / "test_cluster_jobs.py").read_text()
    assert (REPO / "pyproject.toml").is_file()  # `pip install -e .` of the Slurm walkthrough


@pytest.mark.parametrize("module", ["gbvnet.prepare", "gbvnet.data.synthetic"])
def test_readme_commands_of_other_clis_use_flags_their_help_lists(module):
    commands = [c for c in readme_commands(*READMES) if f"python -m {module} " in c]
    assert commands, module
    help_text = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                               cwd=REPO, timeout=120).stdout
    for command in commands:
        for flag in re.findall(r"\s(--[\w-]+)", command.split(f"python -m {module} ", 1)[1]):
            assert re.search(rf"{flag}\b", help_text), f"{module} has no {flag}: {command}"
