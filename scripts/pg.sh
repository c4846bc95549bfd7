#!/usr/bin/env bash
# Starts a private PostgreSQL cluster for the tests: Debian's package (installed when missing),
# its own data directory and a free port on 127.0.0.1, fsync off (test data only).
#   source scripts/pg.sh            # exports PORTCULLIS_TEST_PG and PORTCULLIS_PG_PID
#   kill "$PORTCULLIS_PG_PID"       # stops it (scripts/test.sh does on exit)
# Tests isolate themselves by database (one per test), not by cluster.
set -euo pipefail

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

if [ -z "$(pg_bin)" ]; then
  echo "installing PostgreSQL (Debian package)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
PG_BIN="$(pg_bin)"

PG_DIR="$(mktemp -d /tmp/portcullis-pg.XXXXXX)"
PG_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# initdb refuses to run as root: the cluster belongs to the postgres user when we are root.
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$PG_DIR"
  AS=(runuser -u postgres --)
else
  AS=()
fi
"${AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync >"$PG_DIR/initdb.log" 2>&1
"${AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 start \
  -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" >/dev/null
"$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
  -c "CREATE ROLE portcullis LOGIN SUPERUSER" >/dev/null

PORTCULLIS_PG_PID="$(head -1 "$PG_DIR/data/postmaster.pid")"
export PORTCULLIS_PG_PID
export PORTCULLIS_TEST_PG="postgres://portcullis@127.0.0.1:$PG_PORT/postgres"
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT (pid $PORTCULLIS_PG_PID, $PG_DIR)" >&2
