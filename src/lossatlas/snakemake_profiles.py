"""Snakemake profiles: the SLURM profile installed where Snakemake looks up profiles by name,
and which runs the laptop settings of the workflow profile apply to.

Snakemake applies ``profiles/default`` (the workflow profile) to every run from the checkout,
on top of any ``--profile``, and its values win. Its laptop settings (``cores: all``,
``keep-going``, ``latency-wait``) would cap and override a cluster run, so the workflow
profile sets them only when :func:`runs_locally` says the command runs its jobs on this
machine (a YTE condition in ``profiles/default/config.yaml``).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
from importlib import resources
from pathlib import Path

import yaml

# executors that run jobs in this process's machine (or none at all)
LOCAL_EXECUTORS = (None, "local", "dryrun", "touch")
PROFILE_NAME = "slurm"


def _profile_executor(name: str) -> str | None:
    """The ``executor`` a profile (a path, or a name Snakemake looks up) sets, if any."""
    from snakemake.cli import get_profile_dir

    found = get_profile_dir(str(name))
    if not found:
        return None
    _, config_file = found
    try:
        text = Path(config_file).read_text()
    except OSError:
        return None
    values = yaml.safe_load(text) or {}
    return values.get("executor") if isinstance(values, dict) else None


def snakemake_args(argv: list[str]):
    """snakemake's own parse of its command line ``argv`` (without the program), profiles not
    applied."""
    from snakemake.cli import get_argument_parser

    args, _ = get_argument_parser().parse_known_args(argv)
    return args


def runs_locally(argv: list[str] | None = None) -> bool:
    """Whether snakemake's command line ``argv`` (default: this process's) runs its jobs on this
    machine: no ``--executor`` and no ``--profile`` (or ``$SNAKEMAKE_PROFILE``) that sets a
    cluster or cloud executor."""
    args = snakemake_args(sys.argv[1:] if argv is None else argv)
    if args.executor not in LOCAL_EXECUTORS:
        return False
    profiles = args.profile or []
    if isinstance(profiles, str | os.PathLike):
        profiles = [profiles]
    return all(_profile_executor(p) in LOCAL_EXECUTORS for p in profiles if str(p) != "none")


def user_profile_dir(name: str = PROFILE_NAME) -> Path:
    """Where Snakemake looks up ``--profile NAME`` for this user
    (``$XDG_CONFIG_HOME/snakemake/NAME`` on Linux)."""
    from snakemake.common import get_appdirs

    return Path(get_appdirs().user_config_dir) / name


class ProfileExists(FileExistsError):
    """A different profile of that name is installed already."""


def install_slurm_profile(force: bool = False) -> tuple[Path, str]:
    """Copy the project's SLURM profile to :func:`user_profile_dir`, so that
    ``snakemake --profile slurm`` finds it from anywhere. Returns the directory and what was
    done (``installed``, ``up to date``, ``replaced``). A different profile already there is
    kept, and :class:`ProfileExists` says so, unless ``force`` (then it is moved to
    ``config.yaml.bak`` first)."""
    source = resources.files("lossatlas").joinpath("profiles", PROFILE_NAME, "config.yaml")
    dest_dir = user_profile_dir()
    dest = dest_dir / "config.yaml"
    with resources.as_file(source) as src:
        if dest.exists():
            if filecmp.cmp(src, dest, shallow=False):
                return dest_dir, "up to date"
            if not force:
                raise ProfileExists(
                    f"{dest} exists and differs from lossatlas's SLURM profile; keep yours "
                    f"(compare with {src}) or run `lossatlas install-profile --force`, which "
                    f"moves it to {dest.name}.bak first"
                )
            shutil.move(dest, dest.with_name("config.yaml.bak"))
            shutil.copyfile(src, dest)
            return dest_dir, "replaced (the old one is config.yaml.bak)"
        dest_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return dest_dir, "installed"
