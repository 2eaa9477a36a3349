#!/usr/bin/env bash
# Runs docker-compose.yml for real under rootful podman on a machine without a container registry
# (DESIGN §6): builds the local base images (cached between runs), starts RabbitMQ, a coordinator,
# a reducer and 3 workers, runs a client job whose output must equal embedded mode bit for bit,
# kills a worker container mid-job and still requires identical bits, then tears everything down.
# Prints "topology: passed" and exits 0, or exits 1 saying what failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
project=attn$$
work=$(mktemp -d)
export DOCKER_HOST=unix://$work/podman.sock
export BROKER_PASSWORD=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export ATTENTION_IMAGE=localhost/attention-actors:test RABBITMQ_IMAGE=localhost/attention-rabbitmq:bookworm
compose=(docker-compose -p "$project" -f "$root/docker-compose.yml")

say() { echo "topology: $*"; }
fail() { say "FAILED: $*"; exit 1; }

cleanup() {
    "${compose[@]}" down -t 5 >/dev/null 2>&1 || true
    [ -n "${service:-}" ] && kill "$service" 2>/dev/null || true
    rm -rf "$work" "$root/publish"
}
trap cleanup EXIT

# 1. Packages and the sandbox's settings: hard limits, runc (crun refuses hybrid cgroups), DNS between services.
missing=()
for p in podman runc debootstrap catatonit docker-compose golang-github-containernetworking-plugin-dnsname; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! grep -q 'runtime = "runc"' /etc/containers/containers.conf 2>/dev/null; then
    mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n\n[engine]\nruntime = "runc"\n' > /etc/containers/containers.conf
fi

# 2. Images: a Debian base from debootstrap, a broker and a runtime-libraries image on it (cached), and the node image.
mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
if ! podman image exists localhost/debian:bookworm; then
    say "building the Debian base image (about 40 s, once per machine)"
    debootstrap --variant=minbase bookworm "$work/rootfs" "${mirror:-http://deb.debian.org/debian}" >"$work/build.log" 2>&1 || fail "debootstrap: $(tail -5 "$work/build.log")"
    tar -C "$work/rootfs" -c . | podman import --quiet - localhost/debian:bookworm >/dev/null
fi
build() { podman build -q "$@" >"$work/build.log" 2>&1 || fail "podman build $*: $(tail -20 "$work/build.log")"; }
podman image exists "$RABBITMQ_IMAGE" || build -t "$RABBITMQ_IMAGE" -f containers/broker.Containerfile containers
podman image exists localhost/attention-runtime:bookworm || build -t localhost/attention-runtime:bookworm -f containers/runtime.Containerfile containers
say "publishing a self-contained build and building the node image"
dotnet publish src/AttentionActors.Cli -c Release -r linux-x64 --self-contained -o "$root/publish" -nologo -v quiet >"$work/build.log" 2>&1 || fail "dotnet publish: $(tail -20 "$work/build.log")"
build --target runtime-prebuilt --build-arg RUNTIME_IMAGE=localhost/attention-runtime:bookworm -t "$ATTENTION_IMAGE" -f Dockerfile .

# 3. The Docker-compatible socket docker-compose talks to; podman runs healthchecks only when asked (no systemd).
podman system service --time=0 "$DOCKER_HOST" >/dev/null 2>&1 &
service=$!
for _ in $(seq 50); do [ -S "$work/podman.sock" ] && break; sleep 0.1; done
"${compose[@]}" up -d --no-build --scale worker=3 >"$work/up.log" 2>&1 &
up=$!
for _ in $(seq 120); do
    id=$(podman ps -q --filter "name=${project}_rabbitmq" || true)
    [ -n "$id" ] && podman healthcheck run "$id" >/dev/null 2>&1 && break
    sleep 1
done
wait "$up" || fail "compose up: $(cat "$work/up.log")"

# Every node has joined once it logs "node … up" (then one heartbeat interval for the others to hear it).
# (The logs are read whole before grep: with pipefail, grep -q closing the pipe early reads as a failure.)
joined() { grep -q " up: roles" <<<"$(podman logs "${project}_$1" 2>&1)"; }
for name in coordinator_1 reducer_1 worker_1 worker_2 worker_3; do
    for _ in $(seq 600); do joined "$name" && break; sleep 0.1; done
    joined "$name" || fail "${project}_$name did not start: $(podman logs "${project}_$name" 2>&1 | tail -5)"
done
sleep 2
say "up: $(podman ps --filter "name=$project" --format '{{.Names}}' | tr '\n' ' ')"

# 4. A verified job; its output is compared with embedded mode on the host, bit for bit.
mkdir -p "$work/out" && chmod 777 "$work/out"
job=(run --random --seq 4096 --dim 64 --heads 8 --causal --broker amqp://rabbitmq:5672/)
"${compose[@]}" run --rm -v "$work/out:/out" client "${job[@]}" --verify --out /out/cluster.npy >"$work/client.log" 2>&1 || fail "client job: $(cat "$work/client.log")"
grep -q "cluster == single-node bit for bit: yes" "$work/client.log" || fail "client verify: $(cat "$work/client.log")"
dotnet "src/AttentionActors.Cli/bin/Release/net10.0/attention.dll" run --random --seq 4096 --dim 64 --heads 8 --causal --quiet --out "$work/embedded.npy"
dotnet "src/AttentionActors.Cli/bin/Release/net10.0/attention.dll" compare "$work/embedded.npy" "$work/out/cluster.npy" --tolerance bitwise >"$work/compare.log" || fail "cluster output differs from embedded: $(cat "$work/compare.log")"
say "client job: cluster == embedded bit for bit"

# 5. A longer job with one worker container killed mid-job: the same bits.
long=(run --random --seq 8192 --dim 64 --heads 8 --max-shard-bytes 1048576 --broker amqp://rabbitmq:5672/)
"${compose[@]}" run --rm -v "$work/out:/out" client "${long[@]}" --out /out/killed.npy >"$work/long.log" 2>&1 &
client=$!
for _ in $(seq 300); do grep -q "started:" <(podman logs "${project}_coordinator_1" 2>&1) && break; sleep 0.1; done
sleep 1
podman kill -s KILL "${project}_worker_2" >/dev/null
say "killed ${project}_worker_2 mid-job"
wait "$client" || fail "job with a killed worker: $(cat "$work/long.log")"
dotnet "src/AttentionActors.Cli/bin/Release/net10.0/attention.dll" run --random --seq 8192 --dim 64 --heads 8 --quiet --out "$work/embedded-long.npy"
dotnet "src/AttentionActors.Cli/bin/Release/net10.0/attention.dll" compare "$work/embedded-long.npy" "$work/out/killed.npy" --tolerance bitwise >"$work/compare.log" || fail "output with a killed worker differs: $(cat "$work/compare.log")"
say "job with a killed worker: cluster == embedded bit for bit"
say "passed"
