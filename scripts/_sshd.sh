# Sourced by scripts/test: make sure an OpenSSH server binary is there for the SFTP tests.
# Sets DELTASYNC_TEST_SSHD; the tests start their own throwaway sshd on loopback (tests/sshd.py),
# never the machine's sshd service.

find_sshd() {
  local candidate
  if [ -n "${DELTASYNC_TEST_SSHD:-}" ]; then
    # An explicit choice is honoured or reported, never silently replaced.
    [ -x "$DELTASYNC_TEST_SSHD" ] && { echo "$DELTASYNC_TEST_SSHD"; return 0; }
    echo "DELTASYNC_TEST_SSHD=$DELTASYNC_TEST_SSHD is not an executable file" >&2
    return 2
  fi
  for candidate in "$(command -v sshd || true)" /usr/sbin/sshd; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}

ensure_sshd_installed() {
  local sshd status=0
  sshd=$(find_sshd) || status=$?
  if [ "$status" = 2 ]; then
    return 1
  elif [ "$status" != 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "sshd not found and openssh-server cannot be installed here (needs root and apt-get):" \
        "install it or set DELTASYNC_TEST_SSHD" >&2
      return 1
    fi
    echo "installing openssh-server with apt-get..." >&2
    install_openssh_server_quietly || return 1
    sshd=$(find_sshd) || { echo "openssh-server is installed but sshd was not found" >&2; return 1; }
  fi
  export DELTASYNC_TEST_SSHD=$sshd
}

install_openssh_server_quietly() {
  local policy=/usr/sbin/policy-rc.d saved=/usr/sbin/policy-rc.d.deltasync-saved
  local log status=0
  log=$(mktemp /tmp/deltasync-apt.XXXXXX)
  # The package's postinst would start the machine's own sshd on port 22. invoke-rc.d (and
  # deb-systemd-invoke) ask policy-rc.d first, and exit code 101 means "action forbidden".
  [ -e "$policy" ] && mv "$policy" "$saved"
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
  {
    apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=120 openssh-server
  } >"$log" 2>&1 || status=$?
  rm -f "$policy"
  [ -e "$saved" ] && mv "$saved" "$policy"
  if [ "$status" != 0 ]; then
    cat "$log" >&2
    echo "apt-get could not install openssh-server (exit $status)" >&2
  elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    # The package also enables the service for the next boot; the tests never need that.
    systemctl disable --quiet ssh.service >/dev/null 2>&1 \
      && echo "disabled the ssh.service that openssh-server enabled (tests run their own sshd)" >&2
  fi
  rm -f "$log"
  return "$status"
}
