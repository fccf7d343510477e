"""S3 set-up steps of the Helm chart, run in the project's image (python + minio).

  s3_setup.py provision    the chart's MinIO, with its root keys: create the store's bucket, two
                           policies limited to the store's bucket and prefix (read-write, and
                           read-only for the components that only read: the persona server), and
                           one user per component from
                           /etc/oct/s3-users/<component>/OCT_S3_{ACCESS,SECRET}_KEY
  s3_setup.py wait-bucket  with the component's own keys: wait until the store's bucket answers
                           (create it first when OCT_CREATE_BUCKET is true)

Settings from the environment: OCT_STORE_URI, OCT_S3_ENDPOINT, OCT_S3_SECURE, OCT_S3_CA_FILE,
OCT_S3_ACCESS_KEY/OCT_S3_SECRET_KEY (wait-bucket), MINIO_ROOT_USER/MINIO_ROOT_PASSWORD (provision).
Both steps are idempotent and retry for five minutes while S3 is not up.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import urllib3
from minio import Minio
from minio.credentials import StaticProvider
from minio.minioadmin import MinioAdmin

USERS_DIR = Path("/etc/oct/s3-users")
READ_WRITE, READ_ONLY = "oct-store-readwrite", "oct-store-readonly"
READ_ONLY_COMPONENTS = frozenset({"serving"})
"""Components that never write the store: the persona server reads records and models only."""
ATTEMPTS, PAUSE_S = 60, 5.0


def _store() -> tuple[str, str]:
    uri = urllib.parse.urlparse(os.environ["OCT_STORE_URI"])
    return uri.netloc, uri.path.strip("/")


def _connection() -> dict[str, object]:
    secure = os.environ.get("OCT_S3_SECURE", "false").lower() in ("1", "true", "yes")
    ca_file = os.environ.get("OCT_S3_CA_FILE")
    http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=ca_file) if ca_file else None
    return {"endpoint": os.environ["OCT_S3_ENDPOINT"], "secure": secure, "http_client": http}


def _retry(what: str, step: Callable[[], bool]) -> None:
    for _ in range(ATTEMPTS):
        try:
            if step():
                return
            print(f"waiting: {what}", flush=True)
        except Exception as err:  # S3 not up yet, or the user not provisioned yet
            print(f"waiting: {what}: {err}", flush=True)
        time.sleep(PAUSE_S)
    sys.exit(f"gave up after {ATTEMPTS * PAUSE_S:.0f}s: {what} at {os.environ['OCT_S3_ENDPOINT']}")


def store_policy(bucket: str, prefix: str, *, writes: bool = True) -> dict[str, object]:
    """Objects under the store's prefix, and listing its bucket: nothing else, no admin; without
    `writes`, reading only."""
    objects = f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}*"
    bucket_actions = ["s3:ListBucket", "s3:GetBucketLocation"]
    object_actions = ["s3:GetObject"]
    if writes:
        bucket_actions.append("s3:ListBucketMultipartUploads")
        object_actions += ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Resource": [f"arn:aws:s3:::{bucket}"], "Action": bucket_actions},
            {"Effect": "Allow", "Resource": [objects], "Action": object_actions},
        ],
    }


def policy_for(component: str) -> str:
    return READ_ONLY if component in READ_ONLY_COMPONENTS else READ_WRITE


def _ensure_bucket(client: Minio, bucket: str, create: bool) -> bool:
    if client.bucket_exists(bucket):
        print(f"bucket {bucket} ready", flush=True)
        return True
    if create:
        client.make_bucket(bucket)
        print(f"bucket {bucket} created", flush=True)
        return True
    return False


def _attach_only(admin: MinioAdmin, access: str, policy: str) -> None:
    """Attach `policy` to the user and detach the store's other policy, so that an upgrade moves a
    user made read-write by an earlier chart (attaching alone would add to what it had)."""
    attached = {p for p in str(json.loads(admin.user_info(access)).get("policyName") or "").split(",") if p}
    stale = sorted((attached & {READ_WRITE, READ_ONLY}) - {policy})
    if stale:
        admin.detach_policy(stale, user=access)
    if policy not in attached:
        admin.attach_policy([policy], user=access)


def provision() -> None:
    bucket, prefix = _store()
    root = StaticProvider(os.environ["MINIO_ROOT_USER"], os.environ["MINIO_ROOT_PASSWORD"])
    conn = _connection()
    client = Minio(credentials=root, **conn)  # type: ignore[arg-type]
    _retry(f"bucket {bucket}", lambda: _ensure_bucket(client, bucket, create=True))
    admin = MinioAdmin(endpoint=str(conn["endpoint"]), credentials=root, secure=bool(conn["secure"]),
                       http_client=conn["http_client"])  # type: ignore[arg-type]
    admin.policy_add(READ_WRITE, policy=store_policy(bucket, prefix))
    admin.policy_add(READ_ONLY, policy=store_policy(bucket, prefix, writes=False))
    for folder in sorted(p for p in USERS_DIR.iterdir() if p.is_dir() and not p.name.startswith(".")):
        access = (folder / "OCT_S3_ACCESS_KEY").read_text().strip()
        admin.user_add(access, (folder / "OCT_S3_SECRET_KEY").read_text().strip())
        policy = policy_for(folder.name)
        _attach_only(admin, access, policy)
        print(f"user {access} ({folder.name}): policy {policy}", flush=True)


def wait_bucket() -> None:
    bucket, _ = _store()
    own = StaticProvider(os.environ["OCT_S3_ACCESS_KEY"], os.environ["OCT_S3_SECRET_KEY"])
    client = Minio(credentials=own, **_connection())  # type: ignore[arg-type]
    create = os.environ.get("OCT_CREATE_BUCKET", "false").lower() == "true"
    _retry(f"bucket {bucket}", lambda: _ensure_bucket(client, bucket, create=create))


if __name__ == "__main__":
    steps = {"provision": provision, "wait-bucket": wait_bucket}
    if len(sys.argv) != 2 or sys.argv[1] not in steps:
        sys.exit(f"usage: s3_setup.py {{{'|'.join(steps)}}}")
    steps[sys.argv[1]]()
