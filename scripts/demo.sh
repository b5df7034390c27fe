#!/usr/bin/env bash
# `make demo`: a local Ray head and an MLflow server on 127.0.0.1, the training submitted as a
# Ray job, its log followed until it ends, then where the curves, videos and policy are.
#
# The job names relative paths only: the repository goes up as the job's runtime_env working_dir
# (.gitignore'd files and the excludes below left out) and the entrypoint runs `python` from the
# head's PATH, writing its run folder under the head's $INFLVG_OUTPUT_ROOT, else under `runs` in the
# job's working directory. The local head is started with this venv first on its PATH and
# INFLVG_OUTPUT_ROOT=./runs (a head left by an older demo.sh lacks them: `make demo-stop` first).
# RAY_JOB_ADDRESS=http://HEAD:8265 submits to a head elsewhere instead (one running the image, say),
# with the token in $RAY_AUTH_TOKEN or runs/.ray_auth_token and MLflow at $MLFLOW_TRACKING_URI if set.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-storyworld}
VENV=${VENV:-.venv}
RAY_PORT=${RAY_PORT:-6380}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
ADDRESS=${RAY_JOB_ADDRESS:-}
ROOT=$(pwd)
mkdir -p runs
# Ray's token authentication, with a token kept in runs/ (readable by this user only)
if [ -z "$ADDRESS" ] || [ -z "${RAY_AUTH_TOKEN:-}" ]; then
  if [ ! -s runs/.ray_auth_token ]; then
    (umask 077 && "$VENV/bin/python" -c "import secrets; print(secrets.token_hex(16))" >runs/.ray_auth_token)
  fi
  RAY_AUTH_TOKEN=$(cat runs/.ray_auth_token)
fi
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN

free_port() { "$VENV/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
if [ -z "$ADDRESS" ]; then
  if ! "$VENV/bin/ray" status --address "127.0.0.1:$RAY_PORT" >/dev/null 2>&1; then
    # the head's own environment: jobs run this venv's python and write their runs to ./runs.
    # The job agent's fixed default port (52365) is taken by any other Ray on the machine: pick a free one.
    # Single-machine mode keeps every server of the head, metrics exporters included, on loopback (cluster/local_ray.py)
    PATH="$ROOT/$VENV/bin:$PATH" INFLVG_OUTPUT_ROOT="$ROOT/runs" RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \
      "$VENV/bin/ray" start --head --node-ip-address=127.0.0.1 \
      --port="$RAY_PORT" --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
      --dashboard-agent-listen-port="$(free_port)" --disable-usage-stats >/dev/null
  fi
  if ! curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null; then
    nohup "$VENV/bin/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
      --backend-store-uri "sqlite:///$ROOT/runs/mlflow.db" --default-artifact-root "$ROOT/runs/mlartifacts" \
      >runs/mlflow-server.log 2>&1 &
    for _ in $(seq 60); do curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null && break; sleep 1; done
  fi
  ADDRESS="http://127.0.0.1:$DASHBOARD_PORT"
  TRACKING="http://127.0.0.1:$MLFLOW_PORT"
else
  TRACKING=${MLFLOW_TRACKING_URI:-}
fi

RUNTIME_ENV=$(TRACKING="$TRACKING" "$VENV/bin/python" -c '
import json, os
env = {"OMP_NUM_THREADS": "1"}
if os.environ["TRACKING"]:
    env["MLFLOW_TRACKING_URI"] = os.environ["TRACKING"]
excludes = [".git", ".venv", "runs", "results", "mlruns", "**/__pycache__", "*.egg-info"]
print(json.dumps({"working_dir": ".", "excludes": excludes, "env_vars": env}))')
# `sh -c`: the head's shell reads $INFLVG_OUTPUT_ROOT (Ray quotes each word of the entrypoint)
ENTRYPOINT='exec python -m cluster.train --output-root "${INFLVG_OUTPUT_ROOT:-runs}" "$@"'
submit() {
  # shellcheck disable=SC2086  # TRAIN_ARGS: words on purpose
  "$VENV/bin/ray" job submit --no-wait --address "$ADDRESS" --runtime-env-json "$RUNTIME_ENV" \
    -- sh -c "$ENTRYPOINT" cluster.train --preset "$PRESET" ${TRAIN_ARGS:-} 2>&1
}
# a head that has just started accepts jobs once its job agent is up (a few seconds)
for attempt in $(seq 60); do
  if OUT=$(submit); then break; fi
  if ! grep -q "No available agent" <<<"$OUT" || [ "$attempt" = 60 ]; then echo "$OUT"; exit 1; fi
  sleep 2
done
JOB=$(grep -o 'raysubmit_[A-Za-z0-9]*' <<<"$OUT" | head -1)
echo "submitted $JOB (training preset '$PRESET') to $ADDRESS; following its log"
"$VENV/bin/ray" job logs --address "$ADDRESS" --follow "$JOB"
"$VENV/bin/ray" job status --address "$ADDRESS" "$JOB" 2>&1 | grep -q "succeeded" || { echo "job $JOB did not succeed"; exit 1; }

echo
if [ -n "$TRACKING" ]; then echo "MLflow (curves, sample videos, the policy): $TRACKING  (experiment 'inflvg')"; fi
echo "Ray dashboard: $ADDRESS"
if [ -z "${RAY_JOB_ADDRESS:-}" ]; then echo "Stop both with: make demo-stop"; fi
