#!/usr/bin/env bash
# Runs a command in a network namespace that has only loopback, so nothing the
# tests and benchmarks start can reach the host's network. Every Iroh endpoint
# the binding creates runs a port mapper, whatever `relay` says: it sends a UPnP
# SSDP M-SEARCH to 239.255.255.250:1900 when it binds, to ask a router for a
# port mapping (docs/iroh-binding.md, "The port mapper"). The suite creates
# hundreds of endpoints.
#
#   bash scripts/loopback.sh COMMAND [ARG]...
#
# - Already isolated (this namespace has no interface but lo): runs COMMAND
#   here; namespaces are not nested.
# - As root: `unshare --net`. Otherwise `unshare --map-root-user --net`, where
#   the kernel allows user namespaces. Then lo is brought up and COMMAND
#   replaces this script (exec): its exit status and signals are its own.
# - Where no such namespace can be made: exits 3 saying why, and does not run
#   COMMAND. It never falls back to the host's network.
#
# Install packages before (scripts/setup.ts): there is no network inside.
# Owns: entering that namespace. Needs bash, util-linux's unshare, and ip
# (iproute2).
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: bash scripts/loopback.sh COMMAND [ARG]..." >&2
  exit 2
fi

# /proc/self/net/dev lists the interfaces of this process's namespace (unlike
# /sys/class/net, which shows the namespace /sys was mounted in).
interfaces=$(awk -F: 'NR > 2 { gsub(/ /, "", $1); print $1 }' /proc/self/net/dev | sort | tr '\n' ' ')
if [ "$interfaces" = "lo " ]; then
  exec "$@"
fi

ip=""
for candidate in /usr/sbin/ip /sbin/ip /usr/bin/ip /bin/ip; do
  if [ -x "$candidate" ]; then
    ip=$candidate
    break
  fi
done
if [ -z "$ip" ]; then
  echo "loopback: ip is missing, and it is needed to bring up lo in the namespace; install it as root:" \
    "apt-get install -y iproute2 (npx deno task setup does)" >&2
  exit 3
fi

if [ "$(id -u)" -eq 0 ]; then
  how=(--net)
else
  how=(--map-root-user --net)
fi
# Try first, so a refusal is told apart from COMMAND's own failure.
if ! why=$(unshare "${how[@]}" -- "$ip" link set lo up 2>&1); then
  echo "loopback: cannot make a network namespace with only loopback" \
    "(unshare ${how[*]}: ${why:-failed})." >&2
  echo "loopback: run as root, or allow unprivileged user namespaces" \
    "(sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0)." \
    "Not running $1 on the host's network: its Iroh endpoints would send UPnP searches there." >&2
  exit 3
fi
exec unshare "${how[@]}" -- sh -c '"$0" link set lo up && exec "$@"' "$ip" "$@"
