#!/usr/bin/env bash
# `make demo`: a local Ray head and an MLflow server on 127.0.0.1, the training submitted as a
# Ray job, its log followed until it ends, then where the curves, videos and policy are.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-storyworld}
VENV=${VENV:-.venv}
RAY_PORT=${RAY_PORT:-6380}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
ROOT=$(pwd)
mkdir -p runs
# Ray's token authentication, with a token kept in runs/ (readable by this user only)
if [ ! -s runs/.ray_auth_token ]; then
  (umask 077 && "$VENV/bin/python" -c "import secrets; print(secrets.token_hex(16))" >runs/.ray_auth_token)
fi
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN
RAY_AUTH_TOKEN=$(cat runs/.ray_auth_token)

free_port() { "$VENV/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
if ! "$VENV/bin/ray" status --address "127.0.0.1:$RAY_PORT" >/dev/null 2>&1; then
  # the job agent's fixed default port (52365) is taken by any other Ray on the machine: pick a free one
  "$VENV/bin/ray" start --head --node-ip-address=127.0.0.1 --port="$RAY_PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" --dashboard-agent-listen-port="$(free_port)" \
    --disable-usage-stats >/dev/null
fi
if ! curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null; then
  nohup "$VENV/bin/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    --backend-store-uri "sqlite:///$ROOT/runs/mlflow.db" --default-artifact-root "$ROOT/runs/mlartifacts" \
    >runs/mlflow-server.log 2>&1 &
  for _ in $(seq 60); do curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null && break; sleep 1; done
fi

ADDRESS="http://127.0.0.1:$DASHBOARD_PORT"
submit() {
  "$VENV/bin/ray" job submit --no-wait --address "$ADDRESS" --working-dir . \
    --runtime-env-json "{\"env_vars\": {\"MLFLOW_TRACKING_URI\": \"http://127.0.0.1:$MLFLOW_PORT\", \"OMP_NUM_THREADS\": \"1\"}}" \
    -- "$ROOT/$VENV/bin/python" -m cluster.train --preset "$PRESET" --output-root "$ROOT/runs" ${TRAIN_ARGS:-} 2>&1
}
# a head that has just started accepts jobs once its job agent is up (a few seconds)
for attempt in $(seq 60); do
  if OUT=$(submit); then break; fi
  if ! grep -q "No available agent" <<<"$OUT" || [ "$attempt" = 60 ]; then echo "$OUT"; exit 1; fi
  sleep 2
done
JOB=$(grep -o 'raysubmit_[A-Za-z0-9]*' <<<"$OUT" | head -1)
echo "submitted $JOB (training preset '$PRESET'); following its log"
"$VENV/bin/ray" job logs --address "$ADDRESS" --follow "$JOB"
"$VENV/bin/ray" job status --address "$ADDRESS" "$JOB" 2>&1 | grep -q "succeeded" || { echo "job $JOB did not succeed"; exit 1; }

echo
echo "MLflow UI (curves, sample videos, the policy): http://127.0.0.1:$MLFLOW_PORT  (experiment 'inflvg')"
echo "Ray dashboard: http://127.0.0.1:$DASHBOARD_PORT"
echo "Stop both with: make demo-stop"
