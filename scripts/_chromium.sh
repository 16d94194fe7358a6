# Sourced by scripts/test: make sure a headless Chromium is there for the HTML report test.
# Sets DELTASYNC_TEST_CHROMIUM; the test runs it on a file, with no network and a fresh profile.

find_chromium() {
  local candidate
  if [ -n "${DELTASYNC_TEST_CHROMIUM:-}" ]; then
    # An explicit choice is honoured or reported, never silently replaced.
    [ -x "$DELTASYNC_TEST_CHROMIUM" ] && { echo "$DELTASYNC_TEST_CHROMIUM"; return 0; }
    echo "DELTASYNC_TEST_CHROMIUM=$DELTASYNC_TEST_CHROMIUM is not an executable file" >&2
    return 2
  fi
  for candidate in "$(command -v chromium || true)" /usr/bin/chromium; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}

ensure_chromium_installed() {
  local chromium status=0 log
  chromium=$(find_chromium) || status=$?
  if [ "$status" = 2 ]; then
    return 1
  elif [ "$status" != 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "chromium not found and cannot be installed here (needs root and apt-get):" \
        "install Debian's chromium package or set DELTASYNC_TEST_CHROMIUM" >&2
      return 1
    fi
    echo "installing chromium with apt-get (for the HTML report test)..." >&2
    log=$(mktemp /tmp/deltasync-apt.XXXXXX)
    {
      apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
          -o DPkg::Lock::Timeout=120 chromium fonts-dejavu-core
    } >"$log" 2>&1 || status=$?
    if ! chromium=$(find_chromium); then
      cat "$log" >&2
      rm -f "$log"
      echo "apt-get could not install chromium (exit $status)" >&2
      return 1
    fi
    # apt-get may report a failed trigger of another package although chromium is set up.
    [ "$status" = 0 ] || echo "apt-get exited $status, but chromium is installed" >&2
    rm -f "$log"
  fi
  export DELTASYNC_TEST_CHROMIUM=$chromium
}
