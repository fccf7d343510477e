"""S3 set-up steps of the Helm chart, run in the project's image (python + minio).

  s3_setup.py provision    the chart's MinIO, with its root keys: create the store's bucket, a
                           policy limited to the store's bucket and prefix, and one user per
                           component from /etc/oct/s3-users/<component>/OCT_S3_{ACCESS,SECRET}_KEY
  s3_setup.py wait-bucket  with the component's own keys: wait until the store's bucket answers
                           (create it first when OCT_CREATE_BUCKET is true)

Settings from the environment: OCT_STORE_URI, OCT_S3_ENDPOINT, OCT_S3_SECURE, OCT_S3_CA_FILE,
OCT_S3_ACCESS_KEY/OCT_S3_SECRET_KEY (wait-bucket), MINIO_ROOT_USER/MINIO_ROOT_PASSWORD (provision).
Both steps are idempotent and retry for five minutes while S3 is not up.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import urllib3
from minio import Minio
from minio.credentials import StaticProvider
from minio.error import MinioAdminException
from minio.minioadmin import MinioAdmin

USERS_DIR = Path("/etc/oct/s3-users")
POLICY = "oct-store-readwrite"
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


def store_policy(bucket: str, prefix: str) -> dict[str, object]:
    """Objects under the store's prefix, and listing its bucket: nothing else, no admin."""
    objects = f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Resource": [f"arn:aws:s3:::{bucket}"],
             "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]},
            {"Effect": "Allow", "Resource": [objects],
             "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                        "s3:ListMultipartUploadParts"]},
        ],
    }


def _ensure_bucket(client: Minio, bucket: str, create: bool) -> bool:
    if client.bucket_exists(bucket):
        print(f"bucket {bucket} ready", flush=True)
        return True
    if create:
        client.make_bucket(bucket)
        print(f"bucket {bucket} created", flush=True)
        return True
    return False


def provision() -> None:
    bucket, prefix = _store()
    root = StaticProvider(os.environ["MINIO_ROOT_USER"], os.environ["MINIO_ROOT_PASSWORD"])
    conn = _connection()
    client = Minio(credentials=root, **conn)  # type: ignore[arg-type]
    _retry(f"bucket {bucket}", lambda: _ensure_bucket(client, bucket, create=True))
    admin = MinioAdmin(endpoint=str(conn["endpoint"]), credentials=root, secure=bool(conn["secure"]),
                       http_client=conn["http_client"])  # type: ignore[arg-type]
    admin.policy_add(POLICY, policy=store_policy(bucket, prefix))
    for folder in sorted(p for p in USERS_DIR.iterdir() if p.is_dir() and not p.name.startswith(".")):
        access = (folder / "OCT_S3_ACCESS_KEY").read_text().strip()
        admin.user_add(access, (folder / "OCT_S3_SECRET_KEY").read_text().strip())
        try:
            admin.attach_policy([POLICY], user=access)
        except MinioAdminException as err:  # re-runs find the policy attached already
            if "already in effect" not in str(err) and "PolicyChangeAlreadyApplied" not in str(err):
                raise
        print(f"user {access} ({folder.name}): policy {POLICY}", flush=True)


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
