"""A remote faultd through ssh's stream-local forwarding, as `faultctl --ssh` reaches one:

    ssh -nNT -o ExitOnForwardFailure=yes -o StreamLocalBindUnlink=yes -L LOCAL:REMOTE -- HOST

held while the tunnel is open. The remote host needs no network listener. The program is `ssh`,
or `$FAULTLINE_SSH`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from .errors import UnreachableError

#: How long ssh gets to log in and open the forward (faultctl's figure).
CONNECT_TIMEOUT_S = 30.0
_POLL_S = 0.02


class SshTunnel:
    def __init__(self, destination: str, remote_socket: str) -> None:
        self.destination = destination
        # A private directory: whoever can open the local socket acts on the remote faultd.
        self._dir = tempfile.mkdtemp(prefix=f"faultd-client-ssh-{os.getpid()}-")
        self.socket = os.path.join(self._dir, "faultd.sock")
        program = os.environ.get("FAULTLINE_SSH") or "ssh"
        try:
            # Its own session: a Ctrl-C meant for the caller (which then revokes its faults)
            # must not cut the connection the revoke goes over. So ssh cannot prompt: use
            # keys or an agent.
            self._ssh = subprocess.Popen(
                [program, "-nNT", "-o", "ExitOnForwardFailure=yes",
                 "-o", "StreamLocalBindUnlink=yes", "-L", f"{self.socket}:{remote_socket}",
                 "--", destination],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise UnreachableError(f"cannot reach {destination}:{remote_socket}: {e}") from e
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not os.path.exists(self.socket):
            status = self._ssh.poll()
            if status is not None:
                self.close()
                raise UnreachableError(f"cannot reach {destination}:{remote_socket}: ssh exited "
                                       f"({status}) before forwarding the socket")
            if time.monotonic() > deadline:
                self.close()
                raise UnreachableError(f"cannot reach {destination}:{remote_socket}: ssh did "
                                       f"not forward the socket in {CONNECT_TIMEOUT_S:g} s")
            time.sleep(_POLL_S)

    def close(self) -> None:
        """Ends ssh and removes the local socket."""
        if self._ssh.poll() is None:
            self._ssh.kill()
        self._ssh.wait()
        shutil.rmtree(self._dir, ignore_errors=True)
