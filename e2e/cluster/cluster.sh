#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.
# No kubelet and no scheduler, so Pods stay Pending; everything else (RBAC, admission webhooks,
# controllers turning Deployments into ReplicaSets into Pods, TokenRequest, CRDs) is the real thing.
#
#   cluster.sh start              build what is missing (build.sh), then start what is not running
#                                 and wait until ready; prints `export RBINDER_CLUSTER_DIR=... KUBECONFIG=...`
#                                 lines on stdout, so `eval "$(cluster.sh start)"` sets both
#   cluster.sh wait-ready [SECS]  wait for etcd /health, apiserver /readyz, controller-manager
#   cluster.sh status             one line per component; exit 0 only if all are up and ready
#   cluster.sh restart-apiserver  stop and start kube-apiserver alone (same port, certs, etcd data)
#   cluster.sh stop [--purge]     stop everything started from the state dir (--purge: delete it)
#
# State dir: $RBINDER_CLUSTER_DIR, or for `start` alone a new ${TMPDIR:-/tmp}/rbinder-cluster.XXXXXX
# (printed on stderr). It holds pki/ (generated on first start), etcd-data/, logs/, run/ (pid files),
# ports.env (ports chosen on first start and kept), admin.kubeconfig and cluster.env. `start` on an
# existing state dir restarts whatever is not running, with the same ports, certs and data.
#
# If RBINDER_CLUSTER_OWNER_PID is set at `start`, a watchdog stops the cluster once that process
# is gone (the test harness passes its own pid, so a killed test run leaves nothing behind), and
# with RBINDER_CLUSTER_WATCHDOG_PURGE=1 it also deletes the state dir then.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

cmd=${1-}
[[ -n $cmd ]] || { sed -n '3,/^set -/{/^#/p}' "$0" >&2; exit 2; }
shift

if [[ -n ${RBINDER_CLUSTER_DIR-} ]]; then
  DIR=$RBINDER_CLUSTER_DIR
elif [[ $cmd == start ]]; then
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/rbinder-cluster.XXXXXX")
else
  die "set RBINDER_CLUSTER_DIR to the state dir that \`start\` printed"
fi
if [[ ! -d $DIR ]]; then
  case "$cmd" in
    start) mkdir -p "$DIR" ;;
    stop) exit 0 ;; # nothing to stop
    *) die "no state dir $DIR" ;;
  esac
fi
DIR=$(cd "$DIR" && pwd)
PKI=$DIR/pki
RUN=$DIR/run
LOGS=$DIR/logs
SERVICE_CIDR=10.96.0.0/16 # allocated from, never routed: there is no kube-proxy
SERVICE_ACCOUNT_ISSUER=https://kubernetes.default.svc.cluster.local

# ---------------------------------------------------------------------------------------------
# Ports: free loopback ports picked on first start, then kept for the life of the state dir.

# Three distinct free ports below the kernel's ephemeral range (and the NodePort range): a port bound to 0 comes from that
# range, where any outgoing connection (the tests make many) may take it before etcd or the API
# server binds it, and two such picks in a row may even be the same port.
free_ports() {
  python3 - <<'PY'
import random, socket
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    low = 32768
# Below 30000 too: the API server's NodePort range (30000-32767) is no place for its own port.
first, last = (10000, min(low, 30000)) if low > 11000 else (1024, 65536)
chosen = []
while len(chosen) < 3:
    port = random.randrange(first, last)
    if port in chosen:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    chosen.append(port)
print(*chosen)
PY
}

load_ports() {
  if [[ ! -f $DIR/ports.env ]]; then
    local ports
    read -r -a ports <<<"$(free_ports)"
    {
      echo "ETCD_CLIENT_PORT=${ports[0]}"
      echo "ETCD_PEER_PORT=${ports[1]}"
      echo "APISERVER_PORT=${ports[2]}"
    } >"$DIR/ports.env.tmp"
    mv "$DIR/ports.env.tmp" "$DIR/ports.env"
  fi
  # shellcheck source=/dev/null
  source "$DIR/ports.env"
  APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
  ETCD_URL=http://127.0.0.1:$ETCD_CLIENT_PORT
}

# ---------------------------------------------------------------------------------------------
# Certificates (openssl): one CA signs the apiserver's serving cert and the client certs; the
# service-account tokens are signed by their own RSA key pair. Made once per state dir.

# sign NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]: an ECDSA P-256 key and a cert from the CA.
sign() {
  local name=$1 subject=$2 eku=$3 sans=${4-}
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr"
  {
    echo "[ext]"
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
    echo "extendedKeyUsage = $eku"
    echo "authorityKeyIdentifier = keyid"
    [[ -z $sans ]] || echo "subjectAltName = $sans"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -extensions ext -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

ensure_certs() {
  [[ -f $PKI/done ]] && return 0
  log "generating certificates in $PKI"
  rm -rf "$PKI"
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key" 2>/dev/null
  printf '[req]\ndistinguished_name = dn\n[dn]\n[ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign, digitalSignature\nsubjectKeyIdentifier = hash\n' >"$PKI/ca.cnf"
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=rbinder-e2e-ca" -days 3650 -sha256 \
    -config "$PKI/ca.cnf" -extensions ca -out "$PKI/ca.crt"
  rm -f "$PKI/ca.cnf"
  # 10.96.0.1: the first address of SERVICE_CIDR, the ClusterIP of the `kubernetes` Service.
  sign apiserver "/CN=kube-apiserver" serverAuth \
    "DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP:127.0.0.1, IP:::1, IP:10.96.0.1"
  # The admin is in system:masters, which RBAC lets do anything (and which no RoleBinding can restrict).
  sign admin "/O=system:masters/CN=rbinder-admin" clientAuth
  sign controller-manager "/CN=system:kube-controller-manager" clientAuth
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
  touch "$PKI/done"
}

# write_kubeconfig FILE USER CERT_NAME
write_kubeconfig() {
  local file=$1 user=$2 cert=$3
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rbinder-e2e
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$cert.crt")
    client-key-data: $(base64 -w0 "$PKI/$cert.key")
contexts:
- name: rbinder-e2e
  context:
    cluster: rbinder-e2e
    user: $user
current-context: rbinder-e2e
EOF
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}

# ---------------------------------------------------------------------------------------------
# Processes: each runs in its own session (setsid), output in logs/NAME.log, pid in run/NAME.pid.

# The pid of a running component, or nothing (a pid file whose process is gone, or was reused by
# another program, does not count).
running_pid() {
  local name=$1 pid exe
  [[ -f $RUN/$name.pid ]] || return 0
  pid=$(<"$RUN/$name.pid")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  exe=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
  if [[ -z $exe ]]; then
    # Empty while it is inside execve (the new image's arguments are not set up yet; long on a
    # loaded machine) and once it is a zombie: only the latter is gone.
    local state
    state=$(sed -n 's/^[0-9]* (.*) \([A-Z]\).*/\1/p' "/proc/$pid/stat" 2>/dev/null || true)
    [[ -n $state && $state != Z && $state != X ]] && echo "$pid"
    return 0
  fi
  [[ $exe == *"$name"* ]] && echo "$pid"
  return 0
}

# launch NAME BINARY ARGS...
launch() {
  local name=$1 pid
  shift
  if [[ -n $(running_pid "$name") ]]; then
    return 0
  fi
  mkdir -p "$RUN" "$LOGS"
  echo "=== $(date -u +%FT%TZ) $*" >>"$LOGS/$name.log"
  # Not a process-group leader here (no job control), so setsid execs in place: $! is the program.
  # 9>&-: not the start lock, which would otherwise stay held for as long as the program runs.
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  pid=$!
  # Until it has exec'd, $pid is a copy of this shell, whose command line does not name the
  # component: running_pid would call it gone. Wait for the exec, 10 s at most.
  local i
  for ((i = 0; i < 200; i++)); do
    [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true) == *"$name"* ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "$pid" >"$RUN/$name.pid"
  log "$name started (pid $pid, log $LOGS/$name.log)"
}

# halt NAME [GRACE_SECS]: SIGTERM, then SIGKILL after the grace period.
halt() {
  local name=$1 grace=${2:-20} pid i
  pid=$(running_pid "$name")
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) still there after ${grace}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    log "$name stopped"
  fi
  rm -f "$RUN/$name.pid"
}

start_etcd() {
  # --unsafe-no-fsync: a throw-away test store; saves the shared disk a lot of syncs.
  launch etcd "$(bin_path etcd)" \
    --name=rbinder-e2e \
    --data-dir="$DIR/etcd-data" \
    --listen-client-urls="$ETCD_URL" \
    --advertise-client-urls="$ETCD_URL" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="rbinder-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync \
    --log-level=warn
}

start_apiserver() {
  # --endpoint-reconciler-type=none: the `kubernetes` Endpoints would point at 127.0.0.1, which
  # validation refuses (loopback); nothing in the tests routes through that Service anyway.
  # --shutdown-send-retry-after: on SIGTERM, drain the ordinary requests and then give the
  # long-running ones (watches) 2 s; by default it waits up to 60 s for the controller-manager's
  # watches, which makes restart-apiserver slow.
  launch kube-apiserver "$(bin_path kube-apiserver)" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$APISERVER_PORT" \
    --etcd-servers="$ETCD_URL" \
    --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer="$SERVICE_ACCOUNT_ISSUER" \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --allow-privileged=true \
    --endpoint-reconciler-type=none \
    --shutdown-send-retry-after=true \
    --profiling=false
}

start_controller_manager() {
  # --controllers=*: Kubernetes 1.37's controller-manager has no cloud controllers left (they
  # live in cloud-controller-manager), so `*` is all of the in-tree ones. --secure-port=0: it
  # serves no metrics/healthz port, so it needs no serving cert nor delegated auth.
  launch kube-controller-manager "$(bin_path kube-controller-manager)" \
    --kubeconfig="$DIR/controller-manager.kubeconfig" \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" \
    --cluster-signing-key-file="$PKI/ca.key" \
    --cluster-name=rbinder-e2e \
    --leader-elect=false \
    --bind-address=127.0.0.1 \
    --secure-port=0
}

# The watchdog is a plain sleep loop: no need for a graceful stop.
stop_watchdog() {
  local pid
  pid=$(running_pid watchdog)
  # It may be the very process running this `stop`.
  if [[ -n $pid && $pid != "$$" ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$RUN/watchdog.pid"
}

start_watchdog() {
  local owner=${RBINDER_CLUSTER_OWNER_PID-}
  stop_watchdog # one of an earlier start, watching another owner
  [[ -n $owner ]] || return 0
  mkdir -p "$RUN" "$LOGS"
  # The loop's command line names "watchdog", which running_pid checks.
  # shellcheck disable=SC2016 # $1..$3 are the inner script's arguments
  RBINDER_CLUSTER_DIR=$DIR setsid bash -c '
    while kill -0 "$1" 2>/dev/null; do sleep 2; done
    exec bash "$2" stop $3' watchdog "$owner" "$here/cluster.sh" "${RBINDER_CLUSTER_WATCHDOG_PURGE:+--purge}" >>"$LOGS/watchdog.log" 2>&1 </dev/null 9>&- &
  echo "$!" >"$RUN/watchdog.pid"
}

# ---------------------------------------------------------------------------------------------
# Readiness

admin_curl() {
  curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@"
}

etcd_ready() { curl -s --max-time 2 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'; }
apiserver_ready() { [[ $(admin_curl "$APISERVER_URL/readyz" 2>/dev/null) == ok ]]; }
# The controller-manager is working once its service-account controller has made `default`.
controller_manager_ready() {
  [[ -n $(running_pid kube-controller-manager) ]] &&
    admin_curl -f -o /dev/null "$APISERVER_URL/api/v1/namespaces/default/serviceaccounts/default" 2>/dev/null
}

# wait_for WHAT TIMEOUT CHECK [COMPONENT]: poll CHECK; fail early if COMPONENT's process is gone.
wait_for() {
  local what=$1 timeout=$2 check=$3 component=${4-} deadline=$((SECONDS + $2))
  until $check; do
    if [[ -n $component && -z $(running_pid "$component") ]]; then
      tail -n 30 "$LOGS/$component.log" >&2 || true
      die "$component exited (log: $LOGS/$component.log)"
    fi
    if ((SECONDS >= deadline)); then
      [[ -z $component ]] || tail -n 30 "$LOGS/$component.log" >&2 || true
      die "$what not ready after ${timeout}s"
    fi
    sleep 0.25
  done
}

wait_ready() {
  local timeout=${1:-120}
  wait_for "etcd" "$timeout" etcd_ready etcd
  wait_for "kube-apiserver /readyz" "$timeout" apiserver_ready kube-apiserver
  if [[ -f $RUN/kube-controller-manager.pid ]]; then
    wait_for "kube-controller-manager (default ServiceAccount)" "$timeout" controller_manager_ready kube-controller-manager
  fi
}

write_cluster_env() {
  {
    echo "RBINDER_CLUSTER_DIR=$DIR"
    echo "KUBECONFIG=$DIR/admin.kubeconfig"
    echo "APISERVER_URL=$APISERVER_URL"
    echo "ETCD_URL=$ETCD_URL"
    echo "CA_CERT=$PKI/ca.crt"
    echo "K8S_VERSION=$K8S_VERSION"
    echo "ETCD_VERSION=$ETCD_VERSION"
  } >"$DIR/cluster.env.tmp"
  mv "$DIR/cluster.env.tmp" "$DIR/cluster.env"
}

# ---------------------------------------------------------------------------------------------

case "$cmd" in
  start)
    bash "$here/build.sh" etcd kube-apiserver kube-controller-manager
    for tool in openssl curl python3 setsid; do command -v "$tool" >/dev/null || die "$tool is missing"; done
    # One start at a time per state dir.
    exec 9>"$DIR/.start.lock"
    flock 9
    log "state dir $DIR"
    load_ports
    ensure_certs
    write_kubeconfig "$DIR/admin.kubeconfig" rbinder-admin admin
    write_kubeconfig "$DIR/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
    write_cluster_env
    start_watchdog
    start_etcd
    wait_for "etcd" 60 etcd_ready etcd
    start_apiserver
    wait_for "kube-apiserver /readyz" 120 apiserver_ready kube-apiserver
    start_controller_manager
    wait_ready 120
    log "ready: $APISERVER_URL (Kubernetes $K8S_VERSION, etcd $ETCD_VERSION)"
    echo "export RBINDER_CLUSTER_DIR=$DIR"
    echo "export KUBECONFIG=$DIR/admin.kubeconfig"
    ;;
  wait-ready)
    load_ports
    wait_ready "${1:-120}"
    ;;
  status)
    load_ports
    ok=0
    for name in etcd kube-apiserver kube-controller-manager; do
      pid=$(running_pid "$name")
      if [[ -z $pid ]]; then
        echo "$name: not running"
        ok=1
        continue
      fi
      case $name in
        etcd) if etcd_ready; then state=healthy; else state="not healthy" ok=1; fi ;;
        kube-apiserver) if apiserver_ready; then state=ready; else state="not ready" ok=1; fi ;;
        kube-controller-manager) state=running ;;
      esac
      echo "$name: pid $pid, $state"
    done
    echo "apiserver: $APISERVER_URL"
    echo "kubeconfig: $DIR/admin.kubeconfig"
    exit $ok
    ;;
  restart-apiserver)
    load_ports
    halt kube-apiserver 30
    start_apiserver
    wait_for "kube-apiserver /readyz" 120 apiserver_ready kube-apiserver
    ;;
  stop)
    for name in kube-controller-manager kube-apiserver etcd; do halt "$name"; done
    stop_watchdog
    if [[ ${1-} == --purge ]]; then
      rm -rf "$DIR"
      log "removed $DIR"
    fi
    ;;
  *)
    die "unknown command $cmd (start, wait-ready, status, restart-apiserver, stop)"
    ;;
esac
