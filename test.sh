#!/usr/bin/env bash
# Runs every test: one Release build of the solution, the whole suite, then the kernel tests again
# at each narrower SIMD width (256-bit, 128-bit, scalar) and as on a CPU without AVX-512 (16 vector
# registers, narrow register tiles), so every vector path and tile shape is exercised.
# Needs the .NET 10 SDK; NuGet packages are restored from the configured feed. The cluster tests
# start their own private RabbitMQ broker, check the compose file with docker-compose and make TLS
# certificates with openssl, so those Debian packages are installed when missing (apt-get, as root
# or through sudo); the broker's system service is not used.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]} (private broker, compose-file check, test certificates)"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The package starts its own broker on the default port; the tests never use it, so stop it when the service manager allows.
    $sudo_cmd service rabbitmq-server stop >/dev/null 2>&1 || true
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

dotnet build AttentionActors.sln -c Release -nologo -v quiet

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
