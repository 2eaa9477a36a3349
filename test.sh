#!/usr/bin/env bash
# Runs every test: one Release build of the solution, the whole suite, then the kernel tests again
# at each narrower SIMD width (256-bit, 128-bit, scalar) and as on a CPU without AVX-512 (16 vector
# registers, narrow register tiles), so every vector path and tile shape is exercised.
# Needs the .NET 10 SDK; NuGet packages are restored from the configured feed. The cluster tests
# check docker-compose.yml with docker-compose and run it for real under podman, so the container
# tools (podman, runc, debootstrap, catatonit, docker-compose, the dnsname plugin) are installed
# first when missing, by containers/run-podman.sh (apt-get, as root or through sudo).
set -euo pipefail
cd "$(dirname "$0")"

sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
$sudo_cmd containers/run-podman.sh install

log=$(mktemp)
trap 'rm -f "$log"' EXIT

dotnet build AttentionActors.sln -c Release -nologo -v quiet

# The command line's own build (./attention: a self-contained ReadyToRun composite, 1.5-2 minutes of
# both cores) is made now, when needed, rather than by the first test that calls ./attention: beside
# the cluster tests it would slow their nodes past the failure detector's timings.
./attention --version >/dev/null

run() {
    echo "== $*"
    "$@" 2>&1 | tee -a "$log"
}

run dotnet test AttentionActors.sln -c Release --no-build -nologo
for width in DOTNET_PreferredVectorBitWidth=256 DOTNET_PreferredVectorBitWidth=128 DOTNET_EnableHWIntrinsic=0 DOTNET_EnableAVX512=0; do
    run env "$width" dotnet test tests/AttentionActors.Kernels.Tests -c Release --no-build -nologo
done

# One plain closing line over every run above.
awk '/^(Passed|Failed)!/ {
        for (i = 1; i <= NF; i++) {
            if ($i == "Failed:") failed += $(i + 1)
            if ($i == "Passed:") passed += $(i + 1)
            if ($i == "Skipped:") skipped += $(i + 1)
        }
     }
     END { printf "%d passed, %d failed, %d skipped\n", passed, failed, skipped }' "$log"
