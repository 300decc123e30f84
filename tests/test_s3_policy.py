"""The instance policies of cluster/aws/ against what the code really sends to S3.

The search and a LOSO evaluation run (bio, smoke space, 1 epoch, 2 trials / 2 folds) with ``--cache``,
``--storage``, ``--output`` and ``--config`` on a local S3 server (moto's, on a free port, in this process). Every
request it receives is recorded and mapped to the IAM action(s) and resource(s) S3 authorises it by; each must be
allowed by ``head-policy.json`` and by ``worker-policy.json`` (both node kinds run drivers, trials and folds), as
judged by :func:`allows`, a small evaluator of the Allow / Deny / Condition rules the policies use. A policy that
lacks a permission the code needs therefore fails here, not as an AccessDenied on a cluster.

The endpoint and moto's dummy keys travel in the URIs (``s3://KEY:SECRET@bucket/key?endpoint_override=...``),
which pyarrow reads and pickles with the filesystem, so the session's Ray workers reach the server without any
environment of their own; on a cluster the same paths are plain ``s3://YOUR_BUCKET/...``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote

import pytest

from tests.conftest import store_uri

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (the dev extra)")

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "cluster" / "aws"
BUCKET = "gbvnet-policy-test"  # stands for YOUR_BUCKET, as a user edits it


# ------------------------------------------------------------------------------------ requests -> IAM actions
def authorisations(method: str, path: str, query: str, copy_source: str | None, body: bytes) -> list[tuple]:
    """``(action, resource ARN, condition context)`` for one S3 REST request (path-style), as S3 authorises it."""
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    q = parse_qs(query, keep_blank_values=True)
    bucket_arn = f"arn:aws:s3:::{bucket}"
    if not key:
        if method == "HEAD" or (method == "GET" and ("list-type" in q or not q)):  # HeadBucket, ListObjects(V2)
            return [("s3:ListBucket", bucket_arn, {"s3:prefix": q["prefix"][0]} if "prefix" in q else {})]
        if method == "GET" and "location" in q:
            return [("s3:GetBucketLocation", bucket_arn, {})]
        if method == "GET" and "uploads" in q:
            return [("s3:ListBucketMultipartUploads", bucket_arn, {})]
        if method == "POST" and "delete" in q:  # DeleteObjects: s3:DeleteObject on every key of the body
            keys = [e.text for e in ET.fromstring(body).iter() if e.tag.rsplit("}", 1)[-1] == "Key"]
            return [("s3:DeleteObject", f"{bucket_arn}/{k}", {}) for k in keys]
        raise ValueError(f"unmapped bucket request {method} {path}?{query}: teach authorisations() about it")
    arn = f"{bucket_arn}/{key}"
    if method in ("HEAD", "GET"):
        return [("s3:ListMultipartUploadParts" if "uploadId" in q else "s3:GetObject", arn, {})]
    if method == "PUT" and copy_source:  # CopyObject (pyarrow's move): read the source, write the target
        return [("s3:GetObject", f"arn:aws:s3:::{unquote(copy_source).lstrip('/')}", {}), ("s3:PutObject", arn, {})]
    if method in ("PUT", "POST"):  # PutObject, and the multipart upload's create / part / complete
        return [("s3:PutObject", arn, {})]
    if method == "DELETE":
        return [("s3:AbortMultipartUpload" if "uploadId" in q else "s3:DeleteObject", arn, {})]
    raise ValueError(f"unmapped object request {method} {path}?{query}: teach authorisations() about it")


# ------------------------------------------------------------------------------------------ policy evaluator
def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def _like(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM wildcards: ``*`` any run of characters, ``?`` one character; nothing else is special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.I if ignore_case else 0) is not None


def _condition_holds(condition: dict, context: dict) -> bool:
    for operator, tests in condition.items():
        for key, wanted in tests.items():
            present = key in context
            if operator == "Null":
                holds = (str(wanted).lower() == "true") != present
            elif operator in ("StringEquals", "StringLike"):
                holds = present and any(w == context[key] if operator == "StringEquals" else _like(w, context[key])
                                        for w in _listed(wanted))
            else:
                raise ValueError(f"condition operator {operator} is not known to this evaluator")
            if not holds:
                return False
    return True


def allows(policy: dict, action: str, resource: str, context: dict) -> bool:
    """IAM's decision for one identity policy: an explicit Deny wins, else any matching Allow, else denied."""
    allowed = False
    for st in policy["Statement"]:
        unknown = {"NotAction", "NotResource", "Principal", "NotPrincipal"} & set(st)
        if unknown:
            raise ValueError(f"{st.get('Sid')}: {sorted(unknown)} are not known to this evaluator")
        if not any(_like(a, action, ignore_case=True) for a in _listed(st["Action"])):
            continue
        if not any(_like(r, resource) for r in _listed(st["Resource"])):
            continue
        if not _condition_holds(st.get("Condition", {}), context):
            continue
        if st["Effect"] == "Deny":
            return False
        allowed = True
    return allowed


def load_policy(role: str) -> dict:
    return json.loads((POLICIES / f"{role}-policy.json").read_text().replace("YOUR_BUCKET", BUCKET))


def denied(policy: dict, requests: list[tuple]) -> list[str]:
    return sorted({f"{action} {resource} {context or ''}" for request in requests
                   for action, resource, context in authorisations(*request)
                   if not allows(policy, action, resource, context)})


def test_evaluator_follows_iam_rules():
    policy = {"Statement": [
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b",
         "Condition": {"StringLike": {"s3:prefix": ["p", "p/*"]}}},
        {"Effect": "Allow", "Action": ["s3:Get*"], "Resource": "arn:aws:s3:::b/p/*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/p/secret"},
    ]}
    assert allows(policy, "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "p/x/"})
    assert not allows(policy, "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "q/"})
    assert not allows(policy, "s3:ListBucket", "arn:aws:s3:::b", {})  # a missing key fails a String condition
    assert allows(policy, "s3:GetObject", "arn:aws:s3:::b/p/a", {})
    assert not allows(policy, "s3:GetObject", "arn:aws:s3:::b/p/secret", {})
    assert not allows(policy, "s3:PutObject", "arn:aws:s3:::b/p/a", {})
    assert authorisations("POST", f"/{BUCKET}", "delete", None,
                          b"<Delete><Object><Key>gbvnet/ray/a</Key></Object></Delete>") == [
        ("s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/gbvnet/ray/a", {})]


# ------------------------------------------------------------------------------------- the recorded workload
class Recorder:
    """WSGI middleware in front of moto: ``(method, path, query, copy source, body)`` of every request."""

    def __init__(self, app):
        self.app, self.requests, self.on = app, [], False

    def __call__(self, environ, start_response):
        query = environ.get("QUERY_STRING", "")
        body = b""
        if "delete" in parse_qs(query, keep_blank_values=True):  # the keys of DeleteObjects are in the body
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
        if self.on:
            self.requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), query,
                                  environ.get("HTTP_X_AMZ_COPY_SOURCE"), body))
        return self.app(environ, start_response)


@contextlib.contextmanager
def moto_endpoint(recorder: Recorder | None = None) -> Iterator[str]:
    """A moto server (every AWS service it stands in for) on a free loopback port, behind ``recorder`` when given;
    yields its ``host:port``."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args) -> None:  # the recorder keeps what matters
            pass

    app = moto_server.DomainDispatcherApplication(moto_server.create_backend_app)
    if recorder is not None:
        recorder.app = app
    server = make_server("127.0.0.1", 0, recorder or app, threaded=True, request_handler=Quiet)  # port 0: a free one
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture(scope="module")
def s3(mahnob_cache):
    """A moto S3 server on a free port with the bucket and the prepared cache under ``gbvnet/cache/mahnob``;
    yields ``(uri, recorder)``, ``uri(key)`` being the URI of a key in the bucket."""
    import boto3
    import pyarrow.fs as pafs

    recorder = Recorder(None)
    with moto_endpoint(recorder) as endpoint:

        def uri(key: str) -> str:
            return f"s3://testing:testing@{BUCKET}/{key}?endpoint_override={endpoint}&scheme=http"

        boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
        fs, cache = pafs.FileSystem.from_uri(uri("gbvnet/cache/mahnob"))  # `gbvnet.prepare --cache s3://...`
        pafs.copy_files(str(mahnob_cache), cache, destination_filesystem=fs)  # (by the user, not the nodes)
        yield uri, recorder


@pytest.fixture(scope="module")
def cluster_requests(s3, ray_session, tmp_path_factory, monkeypatch_module) -> list[tuple]:
    """What the nodes send: the search, then the evaluation of its best config, as in cluster/README.md."""
    from gbvnet.evaluation import loso
    from gbvnet.search import cli as search
    from gbvnet.train.launch import init_ray

    uri, recorder = s3
    # A fresh local Ray for this workload: in three full test sessions (2026-12-07) its first Tune run hung in the
    # session's instance (Ray's global-state accessor waiting forever; then trials never scheduled), never when
    # this module ran alone or after the Ray tests before it. The cause is not found yet.
    ray_session.shutdown()
    init_ray(num_cpus=2, log_to_driver=False, configure_logging=False)
    monkeypatch_module.setenv("GBVNET_LOCAL_CACHE", str(tmp_path_factory.mktemp("node-cache")))
    mlflow = store_uri(tmp_path_factory.mktemp('mlflow'))
    best = uri("gbvnet/results/best-mahnob-valence.yaml")
    recorder.on = True
    search.main(["--dataset", "mahnob", "--cache", uri("gbvnet/cache/mahnob"), "--modality", "bio", "--space",
                 "smoke", "--num-samples", "2", "--max-epochs", "1", "--search-subjects", "1", "2", "--concurrent",
                 "2", "--storage", uri("gbvnet/ray"), "--tracking-uri", mlflow, "--output", best, "--quiet"])
    doc = loso.main(["--dataset", "mahnob", "--cache", uri("gbvnet/cache/mahnob"), "--modality", "bio",
                     "--config", best, "--epochs", "1", "--test-subjects", "3", "4", "--storage", uri("gbvnet/ray"),
                     "--tracking-uri", mlflow, "--output", uri("gbvnet/results/loso-mahnob-valence.json")])
    recorder.on = False
    assert [f["fold"] for f in doc["folds"]] == ["subject-3", "subject-4"]
    # pyarrow probes the endpoint once with a HEAD of a bucket name that cannot exist; no policy is involved
    return [r for r in recorder.requests if r[1].lstrip("/").split("/")[0] == BUCKET]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.slow
@pytest.mark.parametrize("role", ["head", "worker"])
def test_policy_allows_every_request_of_the_search_and_the_evaluation(cluster_requests, role):
    actions = {a for r in cluster_requests for a, _, _ in authorisations(*r)}
    # the workload exercised what the policies are about: listing, reads, writes, moves, deletes
    assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= actions, actions
    assert not denied(load_policy(role), cluster_requests), "\n".join(denied(load_policy(role), cluster_requests))


def without(policy: dict, action: str, resource: str) -> dict:
    """A copy of ``policy`` whose Allow statements no longer grant ``action`` on ``resource`` (the statement's other
    actions and resources stay granted)."""
    policy = copy.deepcopy(policy)
    for st in list(policy["Statement"]):
        if st["Effect"] == "Allow" and action in _listed(st["Action"]) and resource in _listed(st["Resource"]):
            st["Action"] = [a for a in _listed(st["Action"]) if a != action] or ["none:None"]
            kept = [r for r in _listed(st["Resource"]) if r != resource]
            if kept:
                policy["Statement"].append({**st, "Action": [action], "Resource": kept})
    return policy


@pytest.mark.slow
@pytest.mark.parametrize("action, resource", [
    ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/gbvnet/results/*"),  # --output
    ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/gbvnet/ray/*"),  # checkpoints, experiment state
    ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/gbvnet/cache/*"),  # the window cache
    ("s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/gbvnet/results/*"),  # pyarrow's move: copy, then delete
    ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}"),  # HeadBucket, existence checks
])
def test_policy_missing_a_needed_permission_is_caught(cluster_requests, action, resource):
    policy = load_policy("worker")
    assert not denied(policy, cluster_requests)
    refused = denied(without(policy, action, resource), cluster_requests)
    prefix = resource.removesuffix("*")
    assert [d for d in refused if d.startswith(f"{action} {prefix}")], refused


@pytest.mark.slow
def test_finished_folds_leave_no_checkpoint_in_the_bucket(s3, cluster_requests):
    """The evaluation removed its folds' checkpoints on S3 too (a Tune trial's path there is a bucket path, on the
    trial's own filesystem); its results stay."""
    import pyarrow.fs as pafs

    uri, _ = s3
    fs, ray_root = pafs.FileSystem.from_uri(uri("gbvnet/ray"))
    keys = [i.path for i in fs.get_file_info(pafs.FileSelector(ray_root, recursive=True))]
    evaluation = [k for k in keys if "/eval-loso-" in k]
    assert [k for k in evaluation if k.endswith("/result.json")], keys
    assert not [k for k in evaluation if "/checkpoint_" in k]


def test_checkpoints_removed_by_a_path_on_the_storage_filesystem(s3):
    import pyarrow.fs as pafs

    from gbvnet.train.launch import remove_checkpoints

    uri, _ = s3
    fs, trial = pafs.FileSystem.from_uri(uri("gbvnet/ray/removal/trial_0"))  # a bucket path, no scheme
    for name in ("checkpoint_000000/model.pt", "checkpoint_000001/model.pt", "result.json"):
        with fs.open_output_stream(f"{trial}/{name}") as f:
            f.write(b"x")
    remove_checkpoints(trial, fs)
    assert [i.base_name for i in fs.get_file_info(pafs.FileSelector(trial, recursive=True))] == ["result.json"]


# ------------------------------------------------------------------- cluster/README.md's AWS commands, in order
# What the walkthrough's AWS steps (1, 3a, 3b up to `kubectl apply`) run against moto, in the README's order;
# left out: Docker, kubectl, Ray and EKS (moto stands in for none of them) and the lines that need them or real
# ids, whose values the test gives instead (VPC=, AMI=, EKS_CLUSTER=, OPERATOR_NS=, DIGEST=).
NOT_RUN = ("docker ", "aws ecr get-login-password", "DIGEST=", "kubectl ", "OPERATOR_NS=", "aws eks ", "ray ",
           "env -u", "VPC=", "EKS_CLUSTER=", "AMI=", "OLD_AMI=", 'sed -i "s/$OLD_AMI', "python -m gbvnet.prepare",
           "export RAY_AUTH_TOKEN")


def aws_walkthrough(out: Path) -> str:
    from tests.test_cluster_config import README, readme_commands

    steps = readme_commands(README)
    steps = steps[: next(i for i, c in enumerate(steps) if c.startswith("export RAY_AUTH_MODE"))]
    script = [c.replace("| kubectl apply -f -", f"> {out}/s3-egress.yaml") for c in steps if not c.startswith(NOT_RUN)]
    return "set -euo pipefail\n" + "\n".join(script) + "\n"


@pytest.mark.slow  # about 25 AWS CLI calls: 1-2 minutes on 2 busy cores
def test_aws_walkthrough_runs_in_order_against_a_local_aws(tmp_path):
    """Blockers of a fresh account: no ECR repository, no bucket, the policies' ids, the MLflow secret, S3's
    ranges for the pods' egress. The README's own lines run (the AWS CLI against moto's ECR / S3 / EC2 / IAM /
    Secrets Manager / STS); then what they created is read back."""
    import shutil
    import subprocess

    import boto3
    import yaml

    aws = shutil.which("aws")
    if aws is None:
        pytest.skip("no AWS CLI (aws) on PATH")
    shutil.copytree(REPO / "cluster", tmp_path / "cluster")
    with moto_endpoint() as endpoint:
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-west-2",
                 "endpoint_url": f"http://{endpoint}"}
        ec2 = boto3.client("ec2", **creds)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        given = {"VPC": vpc, "SUBNET": ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"],
                 "BASTION_SG": ec2.create_security_group(GroupName="bastion", Description="b", VpcId=vpc)["GroupId"],
                 "ROUTE_TABLE": ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"],
                 "AMI": "ami-0123456789abcdef3", "DIGEST": "sha256:" + "b" * 64, "OPERATOR_NS": "ray-system"}
        env = {"PATH": f"{Path(aws).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "AWS_ENDPOINT_URL": creds["endpoint_url"],
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", **given}
        script = aws_walkthrough(tmp_path)
        done = subprocess.run(["bash", "-c", script], env={**env, "MLFLOW_RAY_PASSWORD": "s3cr3t"}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{done.stderr[-3000:]}\n{script}"

        bucket = "my-gbvnet-bucket"
        assert boto3.client("ecr", **creds).describe_repositories()["repositories"][0]["repositoryName"] == \
            "gbvnet/gbvnet"
        s3 = boto3.client("s3", **creds)
        assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert [r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] for r in rules] == [2]
        endpoints = {e["ServiceName"] for e in ec2.describe_vpc_endpoints()["VpcEndpoints"]}
        assert {"com.amazonaws.us-west-2.ec2", "com.amazonaws.us-west-2.s3", "com.amazonaws.us-west-2.ecr.dkr"} <= \
            endpoints, "without NAT the autoscaler needs EC2, the image ECR and S3"
        iam = boto3.client("iam", **creds)
        for role, policy in (("head", "head"), ("worker", "worker"), ("pods", "worker")):
            uploaded = iam.get_role_policy(RoleName=f"gbvnet-ray-{role}", PolicyName="gbvnet")["PolicyDocument"]
            edited = json.loads((tmp_path / "cluster" / "aws" / f"{policy}-policy.json").read_text())
            assert uploaded == edited and "EDIT" not in json.dumps(uploaded) and bucket in json.dumps(uploaded), role
        secret = boto3.client("secretsmanager", **creds).get_secret_value(SecretId="gbvnet/mlflow-credentials")
        assert "mlflow_tracking_password = s3cr3t" in secret["SecretString"]
        egress = yaml.safe_load((tmp_path / "s3-egress.yaml").read_text())["spec"]["egress"][0]["to"]
        assert len(egress) > 1 and all("/" in peer["ipBlock"]["cidr"] for peer in egress), "S3's ranges"

        # an unset MLFLOW_RAY_PASSWORD stops the secret's line instead of storing an empty password
        line = next(c for c in script.splitlines() if c.startswith("aws secretsmanager create-secret"))
        unset = subprocess.run(["bash", "-c", line.replace("gbvnet/mlflow-credentials", "gbvnet/other")], env=env,
                               cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert unset.returncode != 0 and "create the MLflow user first" in unset.stderr


@pytest.mark.parametrize("role", ["head", "worker"])
def test_failed_uploads_can_be_aborted_and_expire(role):
    """A multipart upload a killed node left behind: the nodes may abort it, and the bucket's lifecycle rule
    removes what nobody aborted."""
    policy = load_policy(role)
    for prefix in ("gbvnet/ray", "gbvnet/results"):
        assert allows(policy, "s3:AbortMultipartUpload", f"arn:aws:s3:::{BUCKET}/{prefix}/x/part", {})
    assert not allows(policy, "s3:AbortMultipartUpload", f"arn:aws:s3:::{BUCKET}/gbvnet/cache/x", {})
    rule, = json.loads((POLICIES / "bucket-lifecycle.json").read_text())["Rules"]
    assert rule["Status"] == "Enabled" and rule["Filter"] == {"Prefix": ""}
    assert 1 <= rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] <= 7
