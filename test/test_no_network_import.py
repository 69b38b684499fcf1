"""Importing sprune, and the third-party stacks it imports lazily, makes no network
connection attempt.

No machine sprune runs on needs to reach the network to import it (DESIGN: loaders take
local paths), and an attempt can hang on a firewalled host until it times out. A fresh
interpreter blocks sockets (connect, create_connection, getaddrinfo raise and are recorded)
and then imports every module under sprune/, or runs the functions through which sprune
imports espnet and s3prl (whose import pulled in g2p_en, which called nltk.download); any
attempt fails the test and names the step that made it, with the call site.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import checkout_env

# Runs in the child interpreter; prints one JSON object on its last line.
CHILD = r'''
import importlib
import json
import pkgutil
import socket
import sys
import traceback

attempts = []
current = [None]


def blocked(name):
    def refuse(*args, **kwargs):
        # the callers above the network library: whose import or call asked for it
        skip = ("importlib", "/nltk/", "/urllib/", "/http/", "socket.py", "ssl.py")
        frames = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()[:-1]
                  if not any(part in f.filename for part in skip)]
        attempts.append({"step": current[0], "call": name, "args": repr(args[-1:])[:120],
                         "site": frames[-3:]})
        raise OSError(f"network blocked by the test ({name})")
    return refuse


socket.socket.connect = blocked("socket.connect")
socket.socket.connect_ex = blocked("socket.connect_ex")
socket.create_connection = blocked("socket.create_connection")
socket.getaddrinfo = blocked("socket.getaddrinfo")

import sprune


def walk():
    names = ["sprune"]
    for info in pkgutil.walk_packages(sprune.__path__, "sprune.", onerror=lambda name: None):
        if info.name != "sprune.__main__":      # importing it runs the command line
            names.append(info.name)
    return [(name, lambda name=name: importlib.import_module(name)) for name in names]


def stacks():
    def s3prl_hub():
        from sprune.upstream.s3prl_bridge import import_s3prl
        import_s3prl()

    def s3prl_problems():
        from sprune.superb.s3prl_tasks import check_problems
        check_problems()

    def espnet_tasks():
        from sprune.tasks.transducer import import_espnet
        import_espnet("espnet2.tasks.asr")

    return [("import_s3prl()", s3prl_hub), ("check_problems()", s3prl_problems),
            ("import_espnet('espnet2.tasks.asr')", espnet_tasks)]


steps = walk() if sys.argv[1] == "modules" else stacks()
failed = {}
for name, step in steps:
    current[0] = name
    try:
        step()
    except BaseException as err:              # noqa: BLE001 - reported, not hidden
        failed[name] = f"{type(err).__name__}: {err}"
print(json.dumps({"steps": len(steps), "attempts": attempts, "failed": failed}))
'''


def run_blocked(what: str, tmp_path) -> dict:
    """Run CHILD's `what` steps with sockets blocked; -> its report."""
    # No nltk data and no caches from the user's home: whatever an import would fetch, it
    # has to try to fetch here.
    env = checkout_env(NLTK_DATA=str(tmp_path / "nltk_data"), HOME=str(tmp_path),
                       XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", CHILD, what], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["attempts"] == [], "tried the network:\n" + "\n".join(
        json.dumps(a) for a in report["attempts"])
    assert report["failed"] == {}, report["failed"]
    return report


def test_importing_every_module_attempts_no_connection(tmp_path):
    assert run_blocked("modules", tmp_path)["steps"] > 50


def test_importing_espnet_and_s3prl_through_sprune_attempts_no_connection(tmp_path):
    """s3prl's hub imports espnet's upstream, and espnet2's tasks import its text frontends:
    g2p_en among them, whose import called nltk.download for cmudict and a POS tagger."""
    for package in ("s3prl", "espnet2", "nltk"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed")
    assert run_blocked("stacks", tmp_path)["steps"] == 3
