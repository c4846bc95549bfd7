#!/usr/bin/env bash
# Starts a private PostgreSQL cluster for the tests: Debian's package (installed when missing),
# its own data directory and a free port on 127.0.0.1, fsync off (test data only: a crash of the
# server process loses nothing, a crash of the machine would; PORTCULLIS_PG_FSYNC=on for a test
# of a crash as production has it).
#   source scripts/pg.sh            # exports PORTCULLIS_TEST_PG, PORTCULLIS_PG_PID and
#                                   # PORTCULLIS_PG_DIR (with stop.sh and start.sh)
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
# A port from 30000-32767, below the kernel's ephemeral range, claimed with a lock file until
# the server has bound it (tests claim theirs from 20000-29999 the same way: tests/it/services.rs):
# one picked by binding :0 could be taken by another test in between.
mkdir -p /tmp/portcullis-test-ports
PG_PORT=
for i in $(seq 0 2767); do
  p=$((30000 + ($$ * 7919 + i) % 2768))
  exec {PORT_LOCK}>"/tmp/portcullis-test-ports/$p"
  if flock -n "$PORT_LOCK" \
    && python3 -c "import socket; socket.socket().bind(('127.0.0.1', $p))" 2>/dev/null; then
    PG_PORT=$p
    break
  fi
  exec {PORT_LOCK}>&-
done
[ -n "$PG_PORT" ] || { echo "pg.sh: no free port in 30000-32767" >&2; return 1 2>/dev/null || exit 1; }
# initdb refuses to run as root: the cluster belongs to the postgres user when we are root.
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$PG_DIR"
  AS=(runuser -u postgres --)
else
  AS=()
fi
"${AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync >"$PG_DIR/initdb.log" 2>&1
# start.sh starts the cluster again after stop.sh (tests of a dead database use both).
cat >"$PG_DIR/start.sh" <<START
#!/usr/bin/env bash
set -e
${AS[*]} "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 start \\
  -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=${PORTCULLIS_PG_FSYNC:-off} -c full_page_writes=${PORTCULLIS_PG_FSYNC:-off} -c max_connections=400" >/dev/null
head -1 "$PG_DIR/data/postmaster.pid"
START
# stop.sh stops it at once, as a crash would (no checkpoint; clients see their connections die).
cat >"$PG_DIR/stop.sh" <<STOP
#!/usr/bin/env bash
${AS[*]} "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null
STOP
bash "$PG_DIR/start.sh" >/dev/null
exec {PORT_LOCK}>&-
"$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
  -c "CREATE ROLE portcullis LOGIN SUPERUSER" >/dev/null

PORTCULLIS_PG_PID="$(head -1 "$PG_DIR/data/postmaster.pid")"
export PORTCULLIS_PG_PID
export PORTCULLIS_PG_DIR="$PG_DIR"
export PORTCULLIS_TEST_PG="postgres://portcullis@127.0.0.1:$PG_PORT/postgres"
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT (pid $PORTCULLIS_PG_PID, $PG_DIR)" >&2
