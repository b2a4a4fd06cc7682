"""`nanolens explore`: start the Streamlit explorer on a run, a checkpoint or a folder of runs."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

from nanolens.apps import APP_PATH


def _free_port(host: str, start: int = 8501, tries: int = 50) -> int:
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise ValueError(f"no free port in {start}..{start + tries - 1} on {host}; pass --port")


def explore_command(args: argparse.Namespace) -> tuple[list[str], str]:
    """The `streamlit run` command line for the explorer, and the address it will serve on."""
    app_args: list[str] = []
    for flag in ("ckpt", "runs"):
        value = getattr(args, flag)
        if value is not None:
            if not Path(value).is_dir():
                raise FileNotFoundError(f"--{flag} {value}: no such folder; train a model first with "
                                        f"`nanolens train --out runs/NAME`, or give an existing run folder")
            app_args += [f"--{flag}", os.path.abspath(value)]
    port = args.port or _free_port(args.address)
    # -P (Python 3.11+): the current folder is not put on sys.path, so a user's own click.py or
    # pandas.py there cannot shadow what streamlit imports.
    python = [sys.executable, "-P"] if sys.version_info >= (3, 11) else [sys.executable]
    cmd = [*python, "-m", "streamlit", "run", str(APP_PATH), "--server.headless", "true",
           "--server.address", args.address, "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--global.developmentMode", "false", "--client.toolbarMode", "viewer"]
    if app_args:
        cmd += ["--", *app_args]
    shown = "localhost" if args.address in ("0.0.0.0", "::") else args.address
    return cmd, f"http://{shown}:{port}"


def run(args: argparse.Namespace) -> int:
    cmd, url = explore_command(args)
    if args.dry_run:
        print(" ".join(cmd))
        print(url)
        return 0
    print(f"nanolens explorer: open {url} in your browser (Ctrl+C stops it)", flush=True)
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    if os.name == "posix":  # become the server, so signals (Ctrl+C, kill) reach it directly
        sys.stderr.flush()
        os.execve(cmd[0], cmd, env)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0
