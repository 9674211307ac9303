#!/bin/sh
# Start sshd in the foreground for dream's supervisor: authorized keys from
# $SSH_AUTHORIZED_KEYS for $SSH_USER, host keys made once, the privilege-separation directory,
# and the container's environment for every session (session-env.py says how and why).
set -eu
user="${SSH_USER:-root}"
runtime=/run/dream-sshd
if [ "$(id -u)" = 0 ]; then
  # First, so that `docker exec … su - dev` gets the environment even when sshd does not start.
  install -d -m 700 "$runtime"
  python3 "$DREAM_CONFIG_DIR/session-env.py" "$DREAM_CONFIG_DIR/sshd_config" "$runtime/sshd_config"
fi
if [ -z "${SSH_AUTHORIZED_KEYS:-}" ]; then
  echo "SSH_AUTHORIZED_KEYS is empty, so nobody could log in: not starting sshd"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "sshd needs root (the supervisor runs as $(id -un)): not starting it"
  exit 1
fi
home="$(getent passwd "$user" | cut -d: -f6)"
if [ -z "$home" ]; then
  echo "SSH_USER=$user: no such user"
  exit 1
fi
group="$(id -gn "$user")"
install -d -m 700 -o "$user" -g "$group" "$home/.ssh"
printf '%s\n' "$SSH_AUTHORIZED_KEYS" > "$home/.ssh/authorized_keys"
chown "$user:$group" "$home/.ssh/authorized_keys"
chmod 600 "$home/.ssh/authorized_keys"
ssh-keygen -A >/dev/null
# The privilege-separation account openssh-server's maintainer script would have made.
if ! getent passwd sshd >/dev/null; then
  useradd --system --no-create-home --home-dir /run/sshd --shell /usr/sbin/nologin sshd
fi
install -d -m 755 /run/sshd
echo "sshd for $user on port ${SSH_PORT:-22}"
exec /usr/sbin/sshd -D -e -f "$runtime/sshd_config" -p "${SSH_PORT:-22}"
