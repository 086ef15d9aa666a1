# Start and stop a throwaway PostgreSQL server for the tests (sourced by .ci/run).
# pg_start: installs Debian's postgresql package when its binaries are missing, runs initdb as the `postgres` user
# in a temporary folder, starts the server on a Unix socket only, and exports LARDON_STORE_TEST_PG (the URL the
# tests create their databases from). pg_stop: stops it and removes the folder.

pg_start() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq postgresql >/dev/null
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  PG_DIR=$(mktemp -d /tmp/lardon-pg.XXXXXX)
  chown postgres "$PG_DIR"
  local as_pg=(runuser -u postgres --)
  [ "$(id -u)" = "$(id -u postgres)" ] && as_pg=()
  "${as_pg[@]}" "$bin/initdb" -A trust --no-locale -E UTF8 -U postgres -D "$PG_DIR/data" >/dev/null
  PG_PORT=${PG_PORT:-55432}
  "${as_pg[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w start \
    -o "-k $PG_DIR -c listen_addresses='' -p $PG_PORT -c fsync=off -c max_connections=500" >/dev/null
  PG_BIN=$bin
  export LARDON_STORE_TEST_PG="postgresql+psycopg://postgres@/postgres?host=$PG_DIR&port=$PG_PORT"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on $PG_DIR (port $PG_PORT)"
}

pg_stop() {
  if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ]; then
    local as_pg=(runuser -u postgres --)
    [ "$(id -u)" = "$(id -u postgres)" ] && as_pg=()
    "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
}
