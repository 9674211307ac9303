"""Give every login the container's environment: ssh sessions, ``su - dev``, tmux, login shells.

sshd starts each session with a clean environment (USER, HOME, a default PATH), and a login
shell's /etc/profile resets PATH, so an ssh session into a GPU image had no CUDA_VERSION,
NVIDIA_* or LD_LIBRARY_PATH. The start script runs this as root when the service starts, with
the environment the supervisor got from the container: the image config's Env, ``docker run -e``
variables and the driver fix-up of dream-cuda-env (the image's entrypoint). It writes:

  argv[2]                    sshd's config: argv[1]'s lines after one ``SetEnv`` line (sshd
                             gives SetEnv variables to every session, command or shell);
  /etc/environment           read by pam_env (as root) for `su`, `su -` and login; mode 0600,
                             since `docker run -e` values may be secrets;
  /etc/profile.d/dream-env.sh  PATH only (no secrets, so readable by all): Debian's /etc/profile
                             resets PATH in every login shell and then sources this.

The two system files are written only inside a dream image (/etc/dream/deployments exists), never
on a host where `doit run:procfile` runs this preset. Every file is replaced atomically.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile

# The service's own plumbing and the per-session variables sshd, su and shells set themselves.
SKIP = {"HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "SHLVL", "HOSTNAME", "TERM", "_",
        "MAIL", "PORT", "XDG_CONFIG_HOME", "DREAM_DEPLOYMENT", "DREAM_SERVICE", "DREAM_INSTANCE",
        "DREAM_CONFIG_DIR"}
IMAGE_MARK = "/etc/dream/deployments"


def session_environment(environ: dict[str, str]) -> dict[str, str]:
    """What every session should see: the container's variables, minus plumbing and sshd's own."""
    return {name: value for name, value in sorted(environ.items())
            if name not in SKIP and not name.startswith("SSH_") and name.isidentifier()
            and "\n" not in value and "\0" not in value}


def sshd_setenv(env: dict[str, str]) -> str:
    """One ``SetEnv`` line (sshd keeps only the first), each pair quoted as sshd's parser reads it."""
    pairs = ['"' + f"{k}={v}".replace("\\", "\\\\").replace('"', '\\"') + '"' for k, v in env.items()]
    return "SetEnv " + " ".join(pairs) + "\n" if pairs else ""


def profile_script(env: dict[str, str]) -> str:
    """The container's PATH back after /etc/profile reset it (the rest of the environment
    comes from sshd's SetEnv or pam_env and /etc/profile leaves it alone)."""
    lines = f"export PATH={shlex.quote(env['PATH'])}\n" if "PATH" in env else ""
    return "# written by dream's sshd preset at container start: the container's PATH\n" + lines


def pam_environment(env: dict[str, str]) -> str:
    """pam_env's format: NAME=value taken verbatim (no expansion, no escapes), except that one
    pair of quotes around the whole value is removed: such a value gets a pair of its own."""
    lines = "".join(f'{k}="{v}"\n' if v[:1] in "\"'" and v else f"{k}={v}\n" for k, v in env.items())
    return "# written by dream's sshd preset at container start: the container's environment\n" + lines


def replace(path: str, text: str, mode: int = 0o644) -> None:
    """Write ``path`` so that no reader ever sees half of it."""
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".dream-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def main(argv: list[str]) -> int:
    preset_config, sshd_config = argv[1], argv[2]
    env = session_environment(dict(os.environ))
    with open(preset_config) as handle:
        replace(sshd_config, sshd_setenv(env) + handle.read(), 0o600)
    if os.path.isdir(IMAGE_MARK):
        os.makedirs("/etc/profile.d", exist_ok=True)
        replace("/etc/profile.d/dream-env.sh", profile_script(env))
        replace("/etc/environment", pam_environment(env), 0o600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
