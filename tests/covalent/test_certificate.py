"""cert_file: an OpenSSH user certificate offered with the key, as the plugin did for NERSC-style sites."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from slurmbatch.transport._connect import load_options
from slurmbatch_covalent._shared import new_session
from slurmbatch_covalent.params import resolve, session_settings

pytestmark = [pytest.mark.covalent, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
async def test_the_certificate_is_offered_with_the_key(tmp_path: Path) -> None:
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
    subprocess.run([*keygen, "-f", str(tmp_path / "ca")], check=True)
    subprocess.run([*keygen, "-f", str(tmp_path / "id")], check=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "me", "-n", "me", str(tmp_path / "id.pub")],
        check=True,
    )
    # Under another name than <key>-cert.pub, which asyncssh would find by itself.
    cert = (tmp_path / "id-cert.pub").rename(tmp_path / "signed.pub")
    given = {"address": "login.cluster.org", "ssh_key_file": str(tmp_path / "id"), "cert_file": str(cert)}
    session = new_session(session_settings(resolve({**given, "ssh_config": []}, {})))
    options = await load_options(session.settings)
    # asyncssh offers the key with the certificate first, then the plain key.
    algorithms = [keypair.get_algorithm() for keypair in options.client_keys]
    assert algorithms[0] == "ssh-ed25519-cert-v01@openssh.com", algorithms
