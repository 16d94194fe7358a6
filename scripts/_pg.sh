# Sourced by scripts/test and scripts/bench: start a throwaway PostgreSQL cluster on loopback.
# Sets DELTASYNC_TEST_PG_URL; the cluster and its folder go away when the calling shell exits.

pg_bin_dir() {
  local dir
  if command -v pg_ctl >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v pg_ctl)")"; return; fi
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/pg_ctl" ] && { echo "$dir"; return; }
  done
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing PostgreSQL with apt-get..." >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    for dir in /usr/lib/postgresql/*/bin; do
      [ -x "$dir/pg_ctl" ] && { echo "$dir"; return; }
    done
  fi
  return 1
}

start_throwaway_postgres() {
  local bin pgdir port as_user=()
  bin=$(pg_bin_dir) || { echo "PostgreSQL binaries (initdb, pg_ctl) not found" >&2; return 1; }
  pgdir=$(mktemp -d /tmp/deltasync-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root: run the cluster as an unprivileged user.
    id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$pgdir"
    as_user=(runuser -u postgres --)
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${as_user[@]}" "$bin/initdb" -D "$pgdir/data" -A trust -U deltasync -E UTF8 --locale=C >"$pgdir/initdb.log" 2>&1 \
    || { cat "$pgdir/initdb.log" >&2; return 1; }
  "${as_user[@]}" "$bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $pgdir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null || { cat "$pgdir/server.log" >&2; return 1; }
  PG_STOP=("${as_user[@]}" "$bin/pg_ctl" -D "$pgdir/data" -m immediate stop)
  PG_DIR=$pgdir
  export DELTASYNC_TEST_PG_URL="postgresql+psycopg://deltasync@127.0.0.1:$port/postgres"
}

stop_throwaway_postgres() {
  if [ -n "${PG_DIR:-}" ]; then
    "${PG_STOP[@]}" >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
    PG_DIR=
  fi
}
