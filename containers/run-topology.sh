#!/usr/bin/env bash
# The container topology for real (the cluster tests run this): containers/run-podman.sh starts a
# seed, a reducer and 3 workers from docker-compose.yml under podman; a verified client job inside
# the compose network, a job submitted from this host through the seed's published data port, and a
# job during which a worker container is SIGKILLed must each equal embedded mode bit for bit.
# Prints "topology: passed" and exits 0, or exits 1 saying what failed. Needs root (podman).
# ATTENTION_CLI names the attention.dll to use on the host [the Release build].
set -euo pipefail
# Rootful podman: run as root, through sudo when needed.
[ "$(id -u)" -eq 0 ] || exec sudo --preserve-env=ATTENTION_CLI,ATTENTION_READY_TO_RUN "$0" "$@"
root="$(cd "$(dirname "$0")/.." && pwd)"
work=$(mktemp -d)
export ATTENTION_CLI=${ATTENTION_CLI:-$root/src/AttentionActors.Cli/bin/Release/net10.0/attention.dll}
export ATTENTION_PROJECT=attn$$ ATTENTION_DATA_PORT=$((20000 + $$ % 20000)) ATTENTION_CERTS=$work/certs ATTENTION_STATE=$work/state
export ATTENTION_READY_TO_RUN=${ATTENTION_READY_TO_RUN:-false}
podman_sh="$root/containers/run-podman.sh"

say() { echo "topology: $*"; }
fail() { say "FAILED: $*"; exit 1; }
cleanup() {
    "$podman_sh" down >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

attention() { dotnet "$ATTENTION_CLI" "$@"; }
same() { attention compare "$1" "$2" --tolerance bitwise >"$work/compare.log" 2>&1 || fail "$3 differs from embedded mode: $(cat "$work/compare.log")"; }

"$podman_sh" up 3 >"$work/up.log" 2>&1 || fail "up: $(cat "$work/up.log")"
say "up: $(podman ps --filter "name=$ATTENTION_PROJECT" --format '{{.Names}}' | tr '\n' ' ')"
mkdir -p "$work/out" && chmod 777 "$work/out"

# 1. The compose file's client, inside the network: verified, and the same bits as embedded mode here.
job=(--random --seq 4096 --dim 64 --heads 8 --causal)
"$podman_sh" compose run --rm -v "$work/out:/out" client run --cluster seed:4551 --listen 0.0.0.0:0 "${job[@]}" --verify --out /out/cluster.npy >"$work/client.log" 2>&1 || fail "client job: $(cat "$work/client.log")"
grep -q "agree bit for bit: yes" "$work/client.log" || fail "client verify: $(cat "$work/client.log")"
attention run "${job[@]}" --quiet --out "$work/embedded.npy"
same "$work/embedded.npy" "$work/out/cluster.npy" "the client container's output"
say "client job: cluster == embedded bit for bit"

# 2. From this host, through the published data port: the workers fetch from and the reducer sends to this process.
gateway=$(podman network inspect "${ATTENTION_PROJECT}_default" --format '{{range .Subnets}}{{.Gateway}}{{end}}')
attention run --cluster "127.0.0.1:$ATTENTION_DATA_PORT" --cert "$ATTENTION_CERTS/client.pfx" --ca "$ATTENTION_CERTS/ca.pem" \
    --listen 0.0.0.0:0 --advertise "$gateway" "${job[@]}" --quiet --out "$work/host.npy" >"$work/host.log" 2>&1 || fail "job from the host: $(cat "$work/host.log")"
same "$work/embedded.npy" "$work/host.npy" "the output of a job submitted from the host"
say "job from the host: cluster == embedded bit for bit"

# 3. A longer job with one worker container killed mid-job.
long=(--random --seq 8192 --dim 64 --heads 8 --max-shard-bytes 1048576)
started() { grep -c "started:" <<<"$(podman logs "${ATTENTION_PROJECT}_seed_1" 2>&1)" || true; }
before=$(started)
"$podman_sh" compose run --rm -v "$work/out:/out" client run --cluster seed:4551 --listen 0.0.0.0:0 "${long[@]}" --out /out/killed.npy >"$work/long.log" 2>&1 &
client=$!
for _ in $(seq 600); do [ "$(started)" -gt "$before" ] && break; sleep 0.1; done
sleep 1
podman kill -s KILL "${ATTENTION_PROJECT}_worker_2" >/dev/null
say "killed ${ATTENTION_PROJECT}_worker_2 mid-job"
wait "$client" || fail "job with a killed worker: $(cat "$work/long.log")"
attention run "${long[@]}" --quiet --out "$work/embedded-long.npy"
same "$work/embedded-long.npy" "$work/out/killed.npy" "the output with a killed worker"
say "job with a killed worker: cluster == embedded bit for bit"
say "passed"
