# Sourced by hack/build-tools.sh and hack/build-bench-tools.sh, which define log and die.

# Runs a long build command, printing a progress line every 30 s so a cold build is never silent.
with_progress() {
  local what="$1"; shift
  local start=$SECONDS
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && log "still building $what ($((SECONDS - start)) s)"
  done
  wait "$pid" || die "building $what failed (see the go output above)"
  log "built $what in $((SECONDS - start)) s"
}
