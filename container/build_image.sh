#!/usr/bin/env bash
# Build the real serving image with buildah (no Docker engine needed) and smoke-test it.
#
#   bash container/build_image.sh [MODEL_DIR]      (make image MODEL=artifacts/model)
#
# Runs as root. Steps:
#   1. apt-get install buildah runc debootstrap (if missing);
#   2. a local base image standing in for the Dockerfile's default (Docker's debian:bookworm-*-slim,
#      which this machine cannot pull): debootstrap --variant=minbase bookworm (what Docker's
#      image is made of too) with the same apt sources (bookworm, bookworm-updates,
#      bookworm-security) and without docs, man pages and locales, committed as
#      localhost/debian:bookworm-minbase (skipped when it exists; no registry is needed);
#   3. buildah build -f container/Dockerfile from the repository root with that base: the
#      Dockerfile itself installs Debian's python3 and pip-installs the pinned wheels from PyPI;
#   4. smoke test: run the image's own ENTRYPOINT with "serve" as its own user (buildah run,
#      chroot isolation) with MODEL_DIR's artifact bind-mounted read-only at /opt/ml/model; wait
#      for GET /ping, POST /invocations (the toolkit's JSON shape, JSON Lines with a bad line, a
#      windows-1252 CSV, a gzip body); SIGTERM; expect a clean exit within SageMaker's 30 s.
# Environment: PLATFORM (linux/amd64 or linux/arm64: the endpoint instance's architecture, which
# `cdk deploy` builds for on its own: arm64 for Graviton types such as ml.c7g; default: this
# machine's; another architecture than the machine's needs qemu-user-static), IMAGE (localhost/ticket-triage-inference:latest), BASE_IMAGE
# (localhost/debian:bookworm-minbase), DEBIAN_MIRROR, SMOKE_PORT (a free port).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODEL_DIR="$(realpath "${1:-$ROOT/artifacts/model}")"
IMAGE="${IMAGE:-localhost/ticket-triage-inference:latest}"
BASE_IMAGE="${BASE_IMAGE:-localhost/debian:bookworm-minbase}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SMOKE_PORT="${SMOKE_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
export BUILDAH_ISOLATION=chroot STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"

log() { printf '[build_image %(%H:%M:%S)T] %s\n' -1 "$*"; }
started=$SECONDS

if [[ $EUID -ne 0 ]]; then
    echo "build_image.sh must run as root (buildah without a user namespace set-up)" >&2
    exit 1
fi
if [[ ! -f "$MODEL_DIR/triage_artifact.json" ]]; then
    echo "no model artifact in $MODEL_DIR (make train first, or pass a directory)" >&2
    exit 1
fi

# --- 1. tools ---------------------------------------------------------------------------------
if ! command -v buildah >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing buildah runc debootstrap"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah runc debootstrap
fi

# --- 2. local base image ------------------------------------------------------------------------
if ! buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    log "debootstrap Debian bookworm minbase -> $BASE_IMAGE"
    rootfs="$(mktemp -d /var/tmp/triage-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR"
    # The apt sources of Docker's debian:bookworm image, security updates included.
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    # Docker's slim debian images keep docs, man pages and locales out of every later install
    # and delete downloaded packages after each one: the same here.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
DPKG
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    ctr="$(buildah from scratch)"
    mnt="$(buildah mount "$ctr")"
    cp -a "$rootfs"/. "$mnt"/
    buildah umount "$ctr"
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd '["bash"]' "$ctr"
    buildah commit --rm "$ctr" "$BASE_IMAGE"
    rm -rf "$rootfs"
    trap - EXIT
fi
log "base image ready ($((SECONDS - started)) s)"

# --- 3. the image --------------------------------------------------------------------------------
build_started=$SECONDS
# The host's extra CA certificates (a TLS-inspecting egress proxy, say) are mounted for the RUN
# steps only: when the build stage installs Debian's ca-certificates, update-ca-certificates adds
# them to that stage's bundle, so pip trusts whatever TLS set-up this machine uses to reach PyPI.
# The final stage has no ca-certificates and copies only /opt/venv from the build stage.
extra_cas=()
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    extra_cas=(--volume /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
fi
platform=()
if [[ -n "${PLATFORM:-}" ]]; then
    platform=(--platform "$PLATFORM")
fi
buildah build --isolation chroot --format docker --layers \
    "${extra_cas[@]}" "${platform[@]}" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    -f "$ROOT/container/Dockerfile" -t "$IMAGE" "$ROOT"
log "image built in $((SECONDS - build_started)) s"
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE"

# --- 4. smoke test ---------------------------------------------------------------------------------
smoke_started=$SECONDS
ctr="$(buildah from "$IMAGE")"
# The image's own ENTRYPOINT and USER, as SageMaker would run them (`<image> serve`).
config="$(buildah inspect --type image "$IMAGE")"
user="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["OCIv1"]["config"].get("User") or "0:0")' <<<"$config")"
mapfile -t cmd < <(python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)["OCIv1"]["config"]["Entrypoint"]))' <<<"$config")
log "entrypoint ${cmd[*]} serve, user $user, $(buildah run "$ctr" -- python --version 2>&1), $(buildah run "$ctr" -- cat /etc/debian_version)"
logfile="$(mktemp /tmp/triage-smoke.XXXXXX.log)"
cleanup() {
    [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null || true
    buildah rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT
buildah run --isolation chroot --user "$user" \
    --mount "type=bind,source=$MODEL_DIR,destination=/opt/ml/model,ro" \
    --env SAGEMAKER_BIND_TO_PORT="$SMOKE_PORT" \
    "$ctr" -- "${cmd[@]}" serve >"$logfile" 2>&1 &
server_pid=$!

ready=""
for _ in $(seq 1 240); do
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SMOKE_PORT/ping" || true)"
    if [[ "$code" == "200" ]]; then ready=1; break; fi
    sleep 0.5
done
if [[ -z "$ready" ]]; then
    echo "smoke test: /ping never returned 200" >&2
    cat "$logfile" >&2
    exit 1
fi
log "/ping 200 after $((SECONDS - smoke_started)) s"

json_out="$(curl -sf -X POST "http://127.0.0.1:$SMOKE_PORT/invocations" -H 'Content-Type: application/json' \
    -d '{"inputs": ["my card has not arrived yet", "what is the exchange rate?"], "parameters": {"top_k": 2}}')"
jsonl_out="$(printf '{"id":"a","text":"I lost my card"}\nnot json\n{"id":"c","text":"top up failed"}\n' |
    curl -sf -X POST "http://127.0.0.1:$SMOKE_PORT/invocations" -H 'Content-Type: application/jsonlines' \
        -H 'Accept: application/jsonlines' --data-binary @-)"
csv_out="$(printf 'id,text\r\n1,Ma carte n\x27est pas arriv\xe9e \x80\r\n' |
    curl -sf -X POST "http://127.0.0.1:$SMOKE_PORT/invocations" -H 'Content-Type: text/csv; charset=windows-1252' \
        -H 'Accept: application/jsonlines' --data-binary @-)"
gzip_out="$(printf '{"id":"z","text":"top up failed"}\n' | gzip -c |
    curl -sf -X POST "http://127.0.0.1:$SMOKE_PORT/invocations" -H 'Content-Type: application/jsonlines' \
        -H 'Content-Encoding: gzip' -H 'Accept: application/jsonlines' --data-binary @-)"
python3 - "$json_out" "$jsonl_out" "$csv_out" "$gzip_out" <<'PY'
import json, sys
toolkit = json.loads(sys.argv[1])  # the Hugging Face toolkit's shape: one list per input
assert len(toolkit) == 2 and all(len(row) == 2 and set(row[0]) == {"label", "score"} for row in toolkit), toolkit
lines = [json.loads(line) for line in sys.argv[2].splitlines()]
assert [p["id"] for p in lines] == ["a", None, "c"], lines
assert "label" in lines[0] and "error" in lines[1] and "label" in lines[2], lines
(cp1252,) = [json.loads(line) for line in sys.argv[3].splitlines()]
(gzipped,) = [json.loads(line) for line in sys.argv[4].splitlines()]
assert cp1252["id"] == "1" and "label" in cp1252 and gzipped["id"] == "z" and "label" in gzipped
print("smoke test predictions:", json.dumps(toolkit[0]), json.dumps(lines[1]), json.dumps(cp1252))
PY

# buildah run does not forward SIGTERM (it kills its child): signal the server process itself,
# found among the descendants of the buildah run we started.
descendants() { local child; for child in $(ps -o pid= --ppid "$1"); do echo "$child"; descendants "$child"; done; }
target=""
for pid in $(descendants "$server_pid"); do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- '-m inference_server serve'; then target="$pid"; fi
done
if [[ -z "$target" ]]; then
    echo "smoke test: server process not found under buildah run ($server_pid)" >&2
    exit 1
fi
kill -TERM "$target"
stop_started=$SECONDS
status=0
wait "$server_pid" || status=$?
server_pid=""
if [[ $status -ne 0 ]] || ! grep -q '"server stopped"' "$logfile" || ((SECONDS - stop_started >= 30)); then
    echo "smoke test: no clean shutdown within 30 s of SIGTERM (exit $status)" >&2
    cat "$logfile" >&2
    exit 1
fi
log "clean shutdown after SIGTERM (exit $status); smoke test passed in $((SECONDS - smoke_started)) s"
log "total $((SECONDS - started)) s; image $IMAGE"
