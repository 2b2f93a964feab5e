"""Put the initial policy where the learner and generation pods read it: the chart's `model` init container.

    provision.py wait PATH                          # model.source path / pvc: wait until PATH holds a model
    provision.py huggingface REPO REVISION PATH     # model.source huggingface: download REPO@REVISION to PATH once

A model folder is complete when it has config.json. Several pods start together and share the run volume: the
first takes the lock (a folder next to PATH, created atomically, on NFS too), downloads into PATH.partial and renames
it into place; the others wait. The lock holder touches the lock every 30 s, so a lock left by a killed pod is taken
over after `STALE_S`. The token of a gated or private repository comes from HF_TOKEN (model.huggingface.tokenSecret).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

STALE_S = 300.0
POLL_S = 10.0


def complete(path: Path) -> bool:
    return (path / "config.json").is_file()


def wait(path: Path, what: str) -> None:
    last = 0.0
    while not complete(path):
        if time.monotonic() - last > 60:
            print(f"waiting for {what} at {path} (a Hugging Face model folder with config.json)", flush=True)
            last = time.monotonic()
        time.sleep(POLL_S)
    print(f"model ready at {path}", flush=True)


def _heartbeat(lock: Path, stop: threading.Event) -> None:
    while not stop.wait(30):
        try:
            os.utime(lock)
        except OSError:
            return


def huggingface(repo: str, revision: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    while not complete(path):
        try:
            lock.mkdir()
        except FileExistsError:
            try:
                stale = time.time() - lock.stat().st_mtime > STALE_S
            except FileNotFoundError:
                continue
            if stale:
                print(f"taking over the stale lock {lock}", flush=True)
                shutil.rmtree(lock, ignore_errors=True)
            else:
                print(f"waiting for another pod downloading {repo} (lock {lock})", flush=True)
                time.sleep(POLL_S)
            continue
        stop = threading.Event()
        threading.Thread(target=_heartbeat, args=(lock, stop), daemon=True).start()
        try:
            from huggingface_hub import snapshot_download

            partial = path.with_name(path.name + ".partial")
            print(f"downloading {repo}@{revision} to {path}", flush=True)
            snapshot_download(repo_id=repo, revision=revision, local_dir=partial, token=os.environ.get("HF_TOKEN"))
            shutil.rmtree(partial / ".cache", ignore_errors=True)
            if not complete(partial):
                sys.exit(f"{repo}@{revision} has no config.json: not a Hugging Face model folder")
            os.rename(partial, path)
        finally:
            stop.set()
            shutil.rmtree(lock, ignore_errors=True)
    print(f"model ready at {path}", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "wait":
        wait(Path(argv[1]), "the model")
        return 0
    if len(argv) == 4 and argv[0] == "huggingface":
        huggingface(argv[1], argv[2], Path(argv[3]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
