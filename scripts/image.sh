#!/usr/bin/env bash
# Builds the bpfproxy image from deploy/Dockerfile with docker (when a daemon answers) or buildah.
#
# Usage: scripts/image.sh [--base-from-debootstrap] [--tag NAME] [--engine docker|buildah]
#   default bases: node:20-bookworm (build stage) and debian:bookworm-slim (runtime), from Docker Hub.
#   --base-from-debootstrap, or when Docker Hub cannot be reached: local equivalents instead, made here
#   with debootstrap (Debian bookworm, the distribution of the public bases) plus this machine's Node.js
#   20 in /usr/local (where the node images have it). The debootstrap tree is cached in
#   $BPFPROXY_IMAGE_CACHE (default /var/cache/bpfproxy-image, so fresh clones on this machine reuse it, and
#   with it buildah's layer cache); a machine without it makes it (about a minute).
# Prints the image name on the last line of stdout; everything else goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=bpfproxy:0.1.0
engine=""
local_base=false
while [ "$#" -gt 0 ]; do
  case "$1" in
    --base-from-debootstrap) local_base=true ;;
    --tag) tag="$2"; shift ;;
    --engine) engine="$2"; shift ;;
    *) echo "image: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "image: $*" >&2; }
t0=$(date +%s)

# docker only when its daemon answers (a client binary alone cannot build); else buildah.
if [ -z "$engine" ]; then
  if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v buildah >/dev/null; then
    engine=buildah
  else
    say "neither a docker daemon nor buildah is available (scripts/setup.sh --tests installs buildah)"
    exit 1
  fi
fi
case "$engine" in docker | buildah) ;; *) say "--engine must be docker or buildah"; exit 2 ;; esac

if ! $local_base && ! timeout 10 bash -c ': </dev/tcp/registry-1.docker.io/443' 2>/dev/null; then
  say "Docker Hub is not reachable: using local bases (--base-from-debootstrap)"
  local_base=true
fi

exists() { # image name -> status
  if [ "$engine" = docker ]; then docker image inspect "$1" >/dev/null 2>&1; else buildah inspect --type image "$1" >/dev/null 2>&1; fi
}

import_tree() { # directory image-name [NAME=VALUE environment]: a single-layer image of the tree
  if [ "$engine" = docker ]; then
    tar -C "$1" -c . | docker import ${3:+--change "ENV $3"} - "$2" >/dev/null
  else
    local c mnt
    c=$(buildah from scratch)
    mnt=$(buildah mount "$c")
    tar -C "$1" -c . | tar -C "$mnt" -x
    buildah umount "$c" >/dev/null
    [ -z "${3:-}" ] || buildah config --env "$3" "$c"
    buildah commit --quiet --rm "$c" "$2" >/dev/null
  fi
}

build_args=()
if $local_base; then
  suite=bookworm
  cache=${BPFPROXY_IMAGE_CACHE:-/var/cache/bpfproxy-image}
  mkdir -p "$cache"
  rootfs_tar="$cache/debian-$suite-minbase.tar"
  if [ ! -s "$rootfs_tar" ]; then
    command -v debootstrap >/dev/null || { say "debootstrap is missing (scripts/setup.sh --tests installs it)"; exit 1; }
    say "debootstrap $suite (minbase) into $cache (once per machine)"
    tmp=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    debootstrap --variant=minbase "$suite" "$tmp" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 \
      || { say "debootstrap failed; see $cache/debootstrap.log"; exit 1; }
    # As debian:bookworm-slim: no documentation or translations installed later, no package caches.
    cat >"$tmp/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    # The same archives as the debian:bookworm image (updates and security included).
    rm -f "$tmp/etc/apt/sources.list"
    cat >"$tmp/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    find "$tmp/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete
    rm -rf "$tmp"/usr/share/{man,info,locale,groff,lintian}/* "$tmp"/var/cache/apt/archives/*.deb \
      "$tmp"/var/lib/apt/lists/* "$tmp"/var/log/*.log
    tar -C "$tmp" -cf "$rootfs_tar.part" . && mv "$rootfs_tar.part" "$rootfs_tar"
    rm -rf "$tmp"
    trap - EXIT
  fi
  # Node.js from this machine (scripts/setup.sh requires 20.x): binary, npm and headers, laid out in
  # /usr/local as the node images have them. The runtime stage copies only the binary.
  node_bin=$(readlink -f "$(command -v node)")
  node_ver=$(node --version)
  [ "${node_ver%%.*}" = v20 ] || { say "the local build base needs Node.js 20 on this machine, found $node_ver"; exit 1; }
  prefix=$(dirname "$(dirname "$node_bin")")
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  [ -f "$prefix/include/node/node_api.h" ] || { say "Node.js headers not found in $prefix/include/node"; exit 1; }
  # Where this machine reaches the npm registry through a TLS proxy with its own CA (NODE_EXTRA_CA_CERTS),
  # npm ci in the build stage needs that CA too: the local build base carries it (never the runtime image).
  extra_ca=""
  if [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && [ -s "$NODE_EXTRA_CA_CERTS" ]; then extra_ca=$NODE_EXTRA_CA_CERTS; fi
  # The bases' tag: what goes into them (the tree, node, the CA, and this script's recipe for them).
  key=$( (cat "$rootfs_tar" "$node_bin" ${extra_ca:+"$extra_ca"} && sed -n '/^  if ! exists "\$runtime_base"/,/^  fi$/p' scripts/image.sh) \
    | sha256sum | cut -c1-12)
  runtime_base="localhost/bpfproxy-base-runtime:$suite-$key"
  build_base="localhost/bpfproxy-base-build:$suite-$key"
  if ! exists "$runtime_base" || ! exists "$build_base"; then
    say "importing the local bases ($runtime_base, $build_base)"
    tree=$(mktemp -d "$cache/tree.XXXXXX")
    trap 'rm -rf "$tree"' EXIT
    tar -C "$tree" -xf "$rootfs_tar"
    # As the debian images: apt keeps no package caches or downloaded lists in image layers.
    cat >"$tree/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$tree/etc/apt/apt.conf.d/docker-no-languages"
    rm -f "$tree"/var/cache/apt/*.bin
    import_tree "$tree" "$runtime_base"
    install -D -m 0755 "$node_bin" "$tree/usr/local/bin/node"
    mkdir -p "$tree/usr/local/lib/node_modules" "$tree/usr/local/include"
    cp -a "$npm_dir" "$tree/usr/local/lib/node_modules/npm"
    cp -a "$prefix/include/node" "$tree/usr/local/include/node"
    ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$tree/usr/local/bin/npm"
    ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$tree/usr/local/bin/npx"
    ca_env=""
    if [ -n "$extra_ca" ]; then
      install -D -m 0644 "$extra_ca" "$tree/usr/local/share/bpfproxy-build/extra-ca.crt"
      ca_env=NODE_EXTRA_CA_CERTS=/usr/local/share/bpfproxy-build/extra-ca.crt
    fi
    import_tree "$tree" "$build_base" "$ca_env"
    rm -rf "$tree"
    trap - EXIT
  fi
  build_args=(--build-arg "BUILD_BASE=$build_base" --build-arg "RUNTIME_BASE=$runtime_base")
fi

say "building $tag with $engine"
if [ "$engine" = docker ]; then
  DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile "${build_args[@]}" -t "$tag" . >&2
else
  # chroot isolation: no container runtime is needed to run the RUN steps. --layers caches each step.
  buildah bud --isolation chroot --layers --force-rm --ignorefile deploy/Dockerfile.dockerignore -f deploy/Dockerfile \
    "${build_args[@]}" -t "$tag" . >&2
fi
say "built $tag in $(($(date +%s) - t0)) s"
echo "$tag"
