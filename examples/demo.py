"""Demo: submit one job to the local cluster over ssh and print its output."""

from __future__ import annotations

import subprocess
import time

from slurmbatch.testing import LocalCluster


def main() -> None:
    settings = LocalCluster().settings()
    ssh = ["ssh", "-F", settings.ssh_config, settings.ssh_alias]
    out = f"{settings.remote_workdir}/demo-%j.out"
    subprocess.run([*ssh, f"mkdir -p {settings.remote_workdir}"], check=True)
    job = subprocess.run(
        [*ssh, f"sbatch --parsable -o {out} --wrap='echo hello from $SLURMD_NODENAME'"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"submitted job {job}")
    while subprocess.run([*ssh, f"squeue -h -j {job}"], capture_output=True, text=True).stdout.strip():
        time.sleep(0.2)
    print(subprocess.run([*ssh, f"cat {out.replace('%j', job)}"], capture_output=True, text=True).stdout)


if __name__ == "__main__":
    main()
