# Helpers shared by the benchmark scripts (sourced, not run). The caller sets WORK and PIDS.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 400); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; exit 1
}
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
peak_rss_mib() { awk '/VmHWM/ {printf "%d", $2/1024}' "/proc/$1/status"; }
# start_portcullis NAME TOML: starts the release binary ($PC_BIN, default this checkout's) on
# $WORK/NAME.toml, which holds its
# listen address, `[storage] data_dir = $WORK/NAME-data`, then TOML (more [storage] keys first,
# then any tables). Sets PC_PORT and PC_PID.
start_portcullis() {
  PC_PORT=$(free_port)
  printf '[server]\nlisten = "127.0.0.1:%s"\n[storage]\ndata_dir = "%s"\n%s\n' \
    "$PC_PORT" "$WORK/$1-data" "$2" >"$WORK/$1.toml"
  "${PC_BIN:-target/release/portcullis}" serve --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
  PC_PID=$!; PIDS+=("$PC_PID"); wait_port "$PC_PORT"
}
# bench_tenant [TENANT_KEYS]: the one tenant a bench gateway serves, keyed $AK / $SK.
bench_tenant() {
  printf '[[tenants]]\nid = "bench"\n%s\n[[tenants.keys]]\naccess_key = "%s"\nsecret_key = "%s"\n' \
    "${1:-}" "$AK" "$SK"
}
# s3fs_backend [KEYS]: the `s3fs` backend: the bench's s3s-fs on $FS_PORT, bucket pc-backend.
s3fs_backend() {
  printf '[backends.s3fs]\ntype = "s3"\nendpoint = "http://127.0.0.1:%s"\nbucket = "pc-backend"\naccess_key = "%s"\nsecret_key = "%s"\n%s\n' \
    "$FS_PORT" "$AK" "$SK" "${1:-}"
}
# start_s3s_fs: s3s-fs =0.14.1 (SigV4 on; installed into bench/.tools once) over $WORK/fs, with
# the `pc-backend` bucket the `s3fs` backend writes to. Sets FS_PORT and FS_PID.
start_s3s_fs() {
  local bin=bench/.tools/bin/s3s-fs
  [ -x "$bin" ] || cargo install --locked --quiet --root bench/.tools --version 0.14.1 --features binary s3s-fs
  mkdir -p "$WORK/fs/pc-backend"
  FS_PORT=$(free_port)
  "$bin" --host 127.0.0.1 --port "$FS_PORT" --access-key "$AK" --secret-key "$SK" "$WORK/fs" \
    >"$WORK/s3s-fs.log" 2>&1 &
  FS_PID=$!; PIDS+=("$FS_PID"); wait_port "$FS_PORT"
}
