"""Reads the service's secrets and prints what proves it did, never the secrets themselves."""
import hashlib
import os
import pathlib

folder = pathlib.Path(os.environ["DREAM_SECRETS_DIR"])
secret = folder / "db_password"
info = secret.stat()
print("file", hashlib.sha256(secret.read_bytes()).hexdigest(), oct(info.st_mode & 0o777), info.st_uid,
      "env", hashlib.sha256(os.environ["API_TOKEN"].encode()).hexdigest(), "in", folder, flush=True)
