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

if ! "$VENV/bin/ray" status --address "127.0.0.1:$RAY_PORT" >/dev/null 2>&1; then
  "$VENV/bin/ray" start --head --node-ip-address=127.0.0.1 --port="$RAY_PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" --disable-usage-stats >/dev/null
fi
if ! curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null; then
  nohup "$VENV/bin/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    --backend-store-uri "sqlite:///$ROOT/runs/mlflow.db" --default-artifact-root "$ROOT/runs/mlartifacts" \
    >runs/mlflow-server.log 2>&1 &
  for _ in $(seq 60); do curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null && break; sleep 1; done
fi

"$VENV/bin/ray" job submit --address "http://127.0.0.1:$DASHBOARD_PORT" --working-dir . \
  --runtime-env-json "{\"env_vars\": {\"MLFLOW_TRACKING_URI\": \"http://127.0.0.1:$MLFLOW_PORT\", \"OMP_NUM_THREADS\": \"1\"}}" \
  -- "$ROOT/$VENV/bin/python" -m cluster.train --preset "$PRESET" --output-root "$ROOT/runs" ${TRAIN_ARGS:-}

echo
echo "MLflow UI (curves, sample videos, the policy): http://127.0.0.1:$MLFLOW_PORT  (experiment 'inflvg')"
echo "Ray dashboard: http://127.0.0.1:$DASHBOARD_PORT"
echo "Stop both with: make demo-stop"
