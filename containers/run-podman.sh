#!/usr/bin/env bash
# docker-compose.yml under rootful podman, on a machine with no Docker daemon and no container
# registry (Debian/Ubuntu, as root):
#
#   containers/run-podman.sh up [WORKERS]     # install what is missing, build the images, make ./certs, start the cluster
#   containers/run-podman.sh client [ARGS…]   # the one-shot client (default: the compose file's verified job)
#   containers/run-podman.sh compose ARGS…    # any docker-compose command (ps, logs, kill, …)
#   containers/run-podman.sh down             # stop and remove the containers, stop podman's socket
#   containers/run-podman.sh install          # only install the container tools (up does it too)
#
# What it takes, and why:
# - podman, runc, debootstrap, catatonit, docker-compose (v1, which talks to podman's Docker-compatible
#   socket) and the dnsname network plugin (containers find each other by service name), from apt.
# - /etc/containers/containers.conf: runc (crun refuses the hybrid cgroups of some hosts) and the
#   hard file and process limits of sandboxed machines.
# - Images built here: a Debian base made with debootstrap from the mirror apt uses, the libraries a
#   self-contained .NET program needs on it, and the node image from a ReadyToRun build published on
#   this host (the Dockerfile's runtime-prebuilt target).
# - podman's socket (`podman system service`) kept running in the background while the cluster is up.
# - Without systemd podman runs no healthchecks by itself, so a service waiting for the seed to be
#   healthy would wait forever: this script runs the seed's healthcheck until it passes.
# Settings: ATTENTION_PROJECT (compose project, "attention"), ATTENTION_DATA_PORT (the seed's data
# port on this host, 4551), ATTENTION_CERTS (./certs), ATTENTION_STATE (socket and logs, /run/attention-podman),
# ATTENTION_READY_TO_RUN (false: a quicker build whose nodes start slower).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
project=${ATTENTION_PROJECT:-attention}
state=${ATTENTION_STATE:-/run/attention-podman}/$project
export DOCKER_HOST=unix://$state/podman.sock
export ATTENTION_IMAGE=${ATTENTION_IMAGE:-localhost/attention-actors:latest}
export ATTENTION_CERTS=${ATTENTION_CERTS:-$root/certs}
compose=(docker-compose -p "$project" -f "$root/docker-compose.yml")

say() { echo "podman: $*"; }
# The command line on the host: ./attention, or the build named by ATTENTION_CLI (a path to attention.dll).
cli() { if [ -n "${ATTENTION_CLI:-}" ]; then dotnet "$ATTENTION_CLI" "$@"; else "$root/attention" "$@"; fi; }
fail() { echo "podman: FAILED: $*" >&2; exit 1; }

install() {
    local missing=()
    for p in podman runc debootstrap catatonit docker-compose golang-github-containernetworking-plugin-dnsname; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        [ "$(id -u)" -eq 0 ] || fail "installing ${missing[*]} needs root: run this as root or with sudo"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ! grep -q 'runtime = "runc"' /etc/containers/containers.conf 2>/dev/null; then
        mkdir -p /etc/containers
        printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n\n[engine]\nruntime = "runc"\n' > /etc/containers/containers.conf
    fi
}

images() {
    local work
    work=$(mktemp -d)
    build() { podman build -q "$@" >"$work/build.log" 2>&1 || fail "podman build $*: $(tail -20 "$work/build.log")"; }
    if ! podman image exists localhost/debian:bookworm; then
        say "building a Debian base image (about 40 s, once per machine)"
        local mirror
        mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        debootstrap --variant=minbase bookworm "$work/rootfs" "${mirror:-http://deb.debian.org/debian}" >"$work/build.log" 2>&1 || fail "debootstrap: $(tail -5 "$work/build.log")"
        tar -C "$work/rootfs" -c . | podman import --quiet - localhost/debian:bookworm >/dev/null
    fi
    podman image exists localhost/attention-runtime:bookworm || build -t localhost/attention-runtime:bookworm -f "$root/containers/runtime.Containerfile" "$root/containers"
    say "publishing a self-contained build and building the node image"
    # Its own build folders (--artifacts-path): ./attention builds for this runtime too, and two builds sharing obj/ corrupt each other.
    dotnet publish "$root/src/AttentionActors.Cli" -c Release -r linux-x64 --self-contained -p:PublishReadyToRun="${ATTENTION_READY_TO_RUN:-true}" --artifacts-path "$work/artifacts" -o "$root/publish" -nologo -v quiet >"$work/build.log" 2>&1 || fail "dotnet publish: $(tail -20 "$work/build.log")"
    build --target runtime-prebuilt --build-arg RUNTIME_IMAGE=localhost/attention-runtime:bookworm -t "$ATTENTION_IMAGE" -f "$root/Dockerfile" "$root"
    # The image this replaced, now untagged, would otherwise stay on disk (≈ 0.4 GB a build).
    podman image prune -f >/dev/null 2>&1 || true
    rm -rf "$work" "$root/publish"
}

certs() {
    if [ ! -f "$ATTENTION_CERTS/ca.pem" ]; then
        say "making the cluster's CA and certificates in $ATTENTION_CERTS"
        cli cluster certs --dir "$ATTENTION_CERTS" >/dev/null
    fi
    # The containers run as user 10001: it must read the certificates.
    chown -R "${ATTENTION_USER:-10001}" "$ATTENTION_CERTS"
}

socket() {
    mkdir -p "$state"
    if [ -S "$state/podman.sock" ] && [ -f "$state/podman.pid" ] && kill -0 "$(cat "$state/podman.pid")" 2>/dev/null; then
        return
    fi
    rm -f "$state/podman.sock"
    nohup podman system service --time=0 "$DOCKER_HOST" >"$state/podman.log" 2>&1 &
    echo $! >"$state/podman.pid"
    for _ in $(seq 100); do [ -S "$state/podman.sock" ] && return; sleep 0.1; done
    fail "podman's socket did not open: $(cat "$state/podman.log")"
}

# Runs the seed's healthcheck until it passes (nothing else runs it without systemd).
healthy() {
    for _ in $(seq 180); do
        id=$(podman ps -q --filter "name=${project}_seed_1" || true)
        [ -n "$id" ] && podman healthcheck run "$id" >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}

case "${1:-}" in
up)
    workers=${2:-2}
    install
    images
    certs
    socket
    say "starting a seed, a reducer and $workers workers (project $project)"
    "${compose[@]}" up -d --no-build --scale worker="$workers" >"$state/up.log" 2>&1 &
    up=$!
    healthy || fail "the seed never became healthy: $(podman logs "${project}_seed_1" 2>&1 | tail -10)"
    wait "$up" || fail "compose up: $(cat "$state/up.log")"
    # Up once each node says so (the logs are read whole: grep -q closing a pipe early fails under pipefail).
    for name in seed_1 reducer_1 $(seq -f "worker_%g" 1 "$workers"); do
        for _ in $(seq 600); do grep -q " up: roles" <<<"$(podman logs "${project}_$name" 2>&1)" && break; sleep 0.1; done
        grep -q " up: roles" <<<"$(podman logs "${project}_$name" 2>&1)" || fail "${project}_$name did not start: $(podman logs "${project}_$name" 2>&1 | tail -5)"
    done
    gateway=$(podman network inspect "${project}_default" --format '{{range .Subnets}}{{.Gateway}}{{end}}' 2>/dev/null || true)
    say "up: the seed's data port is 127.0.0.1:${ATTENTION_DATA_PORT:-4551} on this host; submit from here with"
    say "  ./attention run --cluster 127.0.0.1:${ATTENTION_DATA_PORT:-4551} --cert $ATTENTION_CERTS/client.pfx --ca $ATTENTION_CERTS/ca.pem --listen 0.0.0.0:0 --advertise ${gateway:-HOST_ADDRESS} …"
    ;;
client)
    shift
    socket
    "${compose[@]}" run --rm client "$@"
    ;;
compose)
    shift
    socket
    "${compose[@]}" "$@"
    ;;
install)
    install
    ;;
down)
    if [ -S "$state/podman.sock" ]; then
        "${compose[@]}" --profile client down -t 10 >/dev/null 2>&1 || true
    fi
    [ -f "$state/podman.pid" ] && kill "$(cat "$state/podman.pid")" 2>/dev/null || true
    rm -rf "$state"
    say "down"
    ;;
*)
    sed -n '2,9p' "$0" >&2
    exit 2
    ;;
esac
