#!/usr/bin/env bash
# Fetch the live stack's binaries (issue 13) into a cache folder, without touching the system:
# `apt-get download` + `dpkg-deb -x`, with apt's package lists kept in the cache folder too (apt-get update
# writes there, not to /var/lib/apt), so it needs no root and works on a fresh Debian 12 machine or CI runner.
#
#   scripts/install_live.sh [CACHE_DIR]      (default: .cache/live, ignored by git)
#
# Idempotent: a package whose .deb is already in CACHE_DIR/debs is not downloaded again, and the extraction is
# redone only when a .deb is newer than the stamp. Prints the binaries it provides and checks each one starts
# (`--version`), with LD_LIBRARY_PATH pointing at the extracted libraries. Exit 0: every binary runs.
set -euo pipefail

CACHE="${1:-${LIVE_CACHE:-.cache/live}}"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
DEBS="$CACHE/debs"; ROOT="$CACHE/root"; APT="$CACHE/apt"
mkdir -p "$DEBS" "$ROOT" "$APT/lists/partial" "$APT/archives/partial"

# The packages (and the libraries they need that a minimal Debian 12 lacks). Versions: whatever the configured
# Debian 12 mirror serves (checked here: prometheus 2.42, alertmanager 0.25, node-exporter 1.5, redis-exporter
# 1.45, nginx-exporter 0.11, redis 7.0.15, nginx 1.22.1).
PKGS=(prometheus prometheus-alertmanager prometheus-node-exporter prometheus-redis-exporter
      prometheus-nginx-exporter redis-tools redis-server nginx nginx-common liblzf1 libjemalloc2)

if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  echo "install_live.sh: apt-get and dpkg-deb are needed (a Debian or Ubuntu machine)" >&2
  exit 2
fi

# apt with its state in the cache (lists, archives); the system's sources.list is read, never written.
APT_OPTS=(-o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT" -o "Dir::Cache::archives=$APT/archives"
          -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root"
          # bounded on a machine without a network: a mirror that does not answer fails in about a minute
          -o "Acquire::Retries=1" -o "Acquire::http::Timeout=20" -o "Acquire::https::Timeout=20")
need=()
for p in "${PKGS[@]}"; do
  compgen -G "$DEBS/${p}_*.deb" >/dev/null || need+=("$p")
done
if ((${#need[@]})); then
  if [ ! -e "$APT/lists/.updated" ] || [ -n "$(find "$APT/lists/.updated" -mmin +1440 2>/dev/null)" ]; then
    echo "== apt-get update (lists in $APT/lists)"
    apt-get "${APT_OPTS[@]}" -q update
    # apt-get update exits 0 when a mirror cannot be reached (a warning only): the lists count as fresh only
    # when they hold package indexes
    if compgen -G "$APT/lists/*_Packages*" >/dev/null; then
      touch "$APT/lists/.updated"
    else
      echo "install_live.sh: apt-get update fetched no package lists (no network or no reachable mirror?)" >&2
      exit 3
    fi
  fi
  echo "== apt-get download ${need[*]}"
  # a failed download (lists too old for the mirror, say) refreshes the lists next time
  (cd "$DEBS" && apt-get "${APT_OPTS[@]}" -q download "${need[@]}") || { rm -f "$APT/lists/.updated"; exit 4; }
fi

STAMP="$ROOT/.extracted"
if [ ! -e "$STAMP" ] || [ -n "$(find "$DEBS" -name '*.deb' -newer "$STAMP")" ]; then
  echo "== dpkg-deb -x -> $ROOT"
  for d in "$DEBS"/*.deb; do dpkg-deb -x "$d" "$ROOT"; done
  touch "$STAMP"
fi

LIBS="$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/usr/lib/$(uname -m)-linux-gnu"
status=0
for b in usr/bin/prometheus usr/bin/prometheus-alertmanager usr/bin/prometheus-node-exporter \
         usr/bin/prometheus-redis-exporter usr/bin/prometheus-nginx-exporter usr/bin/redis-server usr/sbin/nginx; do
  if [ ! -x "$ROOT/$b" ]; then echo "MISSING $ROOT/$b"; status=1; continue; fi
  flag=--version; [ "${b##*/}" = nginx ] && flag=-v
  v=$(LD_LIBRARY_PATH="$LIBS" timeout 10 "$ROOT/$b" $flag 2>&1 | head -n 1) || v="FAILED: $v"
  case "$v" in FAILED*|*"error while loading"*) status=1 ;; esac
  printf '%-45s %s\n' "$b" "$v"
done
[ -f "$ROOT/etc/prometheus/alertmanager_templates/default.tmpl" ] || \
  [ -n "$(find "$ROOT" -name default.tmpl -print -quit)" ] || echo "note: no Alertmanager default.tmpl found"
exit $status
