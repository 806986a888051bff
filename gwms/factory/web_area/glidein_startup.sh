#!/bin/sh
# glidein_startup.sh: start one gwms-cloud glidein (on a cloud VM or as a plain batch job).
#
# 1. set up the work dir; 2. get the pilot files listed in the manifest (sha256-checked),
# from -files-dir (already fetched by the VM bootstrap) or downloaded from -web;
# 3. run the validation scripts (validate_*), which add KEY=VALUE lines to glidein_config;
# 4. with condor_master on PATH or a condor*.tar.gz in the manifest: write a condor config and
# run `condor_master -f`; otherwise run the embedded startd stand-in gwms_startd.py;
# 5. write a JSON summary. POSIX sh. Options are "-name value" pairs, glideinWMS style:
# -param_NAME VALUE adds NAME=VALUE to glidein_config; unknown options are recorded too.
#
# Exit codes: 0 the startd ended normally, 1 the glidein could not start (files, validation,
# configuration; the summary says why), else the startd's own exit code.

set -u
umask 077

usage() {
    cat <<'EOF'
usage: glidein_startup.sh -collector HOST:PORT [options] [-param_NAME VALUE ...]
  -web URL            factory web area the pilot files come from
  -manifest FILE|URL  "sha256  name" lines (sha256sum format) or the factory's manifest.json
  -files-dir DIR      the files are already here (checked against the manifest, not copied)
  -dir DIR            work dir (default: a new directory under $TMPDIR)
  -id ID              glidein id        -factory NAME  -entry NAME  -clientname NAME
  -proxy FILE         X.509 proxy       -idtoken FILE  bearer token for the collector
  -lifetime S         hard end, seconds from now (default 86400)
  -retire S           stop taking jobs after S seconds (default: the lifetime)
  -idle S             retire when idle this long (default 1200, GLIDEIN_Max_Idle)
  -mode auto|condor|standin   (default auto)     -summary FILE  (default DIR/summary.json)
  -validation-timeout S       per validation script (default 300)
EOF
}

log() { printf '%s glidein_startup[%s]: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$$" "$*" >&2; }

START_TIME=$(date +%s)
WEB=""
MANIFEST=""
FILES_DIR=""
WORK_DIR=""
GLIDEIN_ID="${GLIDEIN_ID:-}"
FACTORY=""
ENTRY=""
CLIENT=""
PROXY="${X509_USER_PROXY:-}"
IDTOKEN=""
COLLECTOR=""
LIFETIME=86400
RETIRE=""
IDLE=1200
MODE=auto
SUMMARY=""
VALIDATION_TIMEOUT=300
PYTHON="${GWMS_PYTHON:-python3}"
NL='
'
EXTRA_CONFIG=""
STATUS=failed
REASON=""
RUN_MODE=none
CHILD=""

json_string() {
    # A JSON string literal: drop control characters, escape backslashes and quotes.
    printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

write_summary() {
    code=$1
    [ -n "$SUMMARY" ] || return 0
    tmp="$SUMMARY.tmp.$$"
    {
        printf '{"glidein_id": %s, "status": %s, "reason": %s, "mode": %s, ' \
            "$(json_string "$GLIDEIN_ID")" "$(json_string "$STATUS")" \
            "$(json_string "$REASON")" "$(json_string "$RUN_MODE")"
        printf '"exit_code": %d, "started": %d, "ended": %d, "startd_summary": %s}\n' \
            "$code" "$START_TIME" "$(date +%s)" "$(json_string "log/startd-summary.json")"
    } >"$tmp" && mv -f "$tmp" "$SUMMARY"
}

fail() {
    REASON="$*"
    STATUS=failed
    log "glidein $GLIDEIN_ID cannot start: $REASON"
    write_summary 1
    exit 1
}

on_term() {
    if [ -n "$CHILD" ]; then
        kill -TERM "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    STATUS=killed
    REASON="stopped by a signal (time limit or shutdown)"
    log "$REASON"
    write_summary 143
    exit 143
}
trap on_term TERM INT

config_key() {
    # A name fit for glidein_config and ClassAds.
    printf '%s' "$1" | tr -c 'A-Za-z0-9_' '_'
}

add_config() {
    case $2 in *"$NL"*) fail "value of $1 has a newline; pass one-line values" ;; esac
    printf '%s=%s\n' "$1" "$2" >>"$CONFIG"
}

# --- arguments ----------------------------------------------------------------------------
while [ $# -gt 0 ]; do
    opt=$1
    case $opt in
        -h | -help | --help) usage; exit 0 ;;
        -*) ;;
        *) log "unexpected argument '$opt'"; usage >&2; exit 1 ;;
    esac
    if [ $# -lt 2 ]; then
        log "option $opt needs a value"
        exit 1
    fi
    val=$2
    shift 2
    case $opt in
        -web) WEB=$val ;;
        -manifest) MANIFEST=$val ;;
        -files-dir) FILES_DIR=$val ;;
        -dir) WORK_DIR=$val ;;
        -id | -name) GLIDEIN_ID=$val ;;
        -factory) FACTORY=$val ;;
        -entry) ENTRY=$val ;;
        -clientname | -client) CLIENT=$val ;;
        -proxy) PROXY=$val ;;
        -idtoken) IDTOKEN=$val ;;
        -collector) COLLECTOR=$val ;;
        -lifetime) LIFETIME=$val ;;
        -retire) RETIRE=$val ;;
        -idle) IDLE=$val ;;
        -mode) MODE=$val ;;
        -summary) SUMMARY=$val ;;
        -validation-timeout) VALIDATION_TIMEOUT=$val ;;
        -param_*) EXTRA_CONFIG="$EXTRA_CONFIG$(config_key "${opt#-param_}")=$val$NL" ;;
        *) EXTRA_CONFIG="${EXTRA_CONFIG}GLIDEIN_ARG_$(config_key "${opt#-}")=$val$NL" ;;
    esac
done

for number in "$LIFETIME" "$IDLE" "$VALIDATION_TIMEOUT" ${RETIRE:+"$RETIRE"}; do
    case $number in '' | *[!0-9]*) log "'$number' is not a number of seconds"; exit 1 ;; esac
done
[ -n "$RETIRE" ] || RETIRE=$LIFETIME
[ -n "$GLIDEIN_ID" ] || GLIDEIN_ID="$(hostname 2>/dev/null || echo glidein).$$"
case $MODE in auto | condor | standin) ;; *) log "-mode must be auto, condor or standin"; exit 1 ;; esac

# --- work dir -----------------------------------------------------------------------------
if [ -z "$WORK_DIR" ]; then
    WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/glide_XXXXXX") || { log "cannot make a work dir"; exit 1; }
fi
mkdir -p "$WORK_DIR/log" || { log "cannot create $WORK_DIR/log"; exit 1; }
WORK_DIR=$(cd "$WORK_DIR" && pwd -P)
cd "$WORK_DIR" || exit 1
[ -n "$SUMMARY" ] || SUMMARY="$WORK_DIR/summary.json"
CONFIG="$WORK_DIR/glidein_config"
: >"$CONFIG"
RETIRE_AT=$((START_TIME + RETIRE))
DIE_AT=$((START_TIME + LIFETIME))
log "glidein $GLIDEIN_ID starting in $WORK_DIR (retire in ${RETIRE}s, end in ${LIFETIME}s)"

add_config GLIDEIN_ID "$GLIDEIN_ID"
add_config GLIDEIN_Factory "$FACTORY"
add_config GLIDEIN_Entry_Name "$ENTRY"
add_config GLIDEIN_Client "$CLIENT"
add_config GLIDEIN_WORK_DIR "$WORK_DIR"
add_config GLIDEIN_Collector "$COLLECTOR"
add_config GLIDEIN_ToRetire "$RETIRE_AT"
add_config GLIDEIN_ToDie "$DIE_AT"
add_config GLIDEIN_Max_Idle "$IDLE"
add_config X509_USER_PROXY "$PROXY"
printf '%s' "$EXTRA_CONFIG" >>"$CONFIG"

# --- pilot files --------------------------------------------------------------------------
fetch_url() {  # URL DEST
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --retry 3 --connect-timeout 10 --max-time 600 -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -T 60 -t 3 -O "$2" "$1"
    else
        "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"
    fi
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
    fi
}

FILES="$WORK_DIR/files"
LIST="$WORK_DIR/files.sha256"
: >"$LIST"
if [ -n "$MANIFEST" ]; then
    case $MANIFEST in
        http://* | https://*) fetch_url "$MANIFEST" "$WORK_DIR/manifest.raw" || fail "cannot download the manifest $MANIFEST" ;;
        *) cp "$MANIFEST" "$WORK_DIR/manifest.raw" || fail "cannot read the manifest $MANIFEST" ;;
    esac
    if [ "$(head -c 1 "$WORK_DIR/manifest.raw")" = "{" ]; then
        "$PYTHON" -c 'import json, sys
for name, digest in sorted(json.load(open(sys.argv[1])).items()):
    if isinstance(digest, dict):
        digest = digest.get("sha256", "")
    print("%s  %s" % (digest, name))' "$WORK_DIR/manifest.raw" >"$LIST" || fail "the manifest $MANIFEST is not valid JSON"
    else
        cp "$WORK_DIR/manifest.raw" "$LIST"
    fi
fi
if [ -n "$FILES_DIR" ]; then
    FILES=$FILES_DIR
else
    mkdir -p "$FILES"
fi

CONDOR_TARBALL=""
VALIDATORS=""
while read -r digest name; do
    [ -n "$digest" ] || continue
    case $name in '' | . | .. | *[!A-Za-z0-9._-]*) fail "manifest entry '$name' is not a plain file name" ;; esac
    case $digest in *[!0-9a-f]*) fail "manifest entry $name: '$digest' is not a sha256" ;; esac
    [ ${#digest} -eq 64 ] || fail "manifest entry $name: '$digest' is not a sha256"
    if [ ! -f "$FILES/$name" ]; then
        [ -n "$WEB" ] || fail "$name is not in $FILES and no -web was given to download it"
        fetch_url "${WEB%/}/$name" "$FILES/$name" || fail "cannot download ${WEB%/}/$name"
    fi
    found=$(sha256_of "$FILES/$name")
    [ "$found" = "$digest" ] || fail "$name has sha256 $found, the manifest says $digest; refusing to run it"
    case $name in
        validate_*) VALIDATORS="$VALIDATORS $name" ;;
        condor*.tar.gz | condor*.tgz) CONDOR_TARBALL=$name ;;
    esac
done <"$LIST"
add_config GLIDEIN_FILES_DIR "$FILES"

# --- validation ---------------------------------------------------------------------------
for name in $VALIDATORS; do
    log "validation: $name"
    if command -v timeout >/dev/null 2>&1; then
        timeout "$VALIDATION_TIMEOUT" /bin/sh "$FILES/$name" "$CONFIG" >>"$WORK_DIR/log/validation.log" 2>&1
    else
        /bin/sh "$FILES/$name" "$CONFIG" >>"$WORK_DIR/log/validation.log" 2>&1
    fi
    rc=$?
    if [ $rc -ne 0 ]; then
        last=$(tail -n 1 "$WORK_DIR/log/validation.log" 2>/dev/null)
        fail "validation script $name failed (exit $rc): $last"
    fi
done

# --- condor or the stand-in ---------------------------------------------------------------
[ -n "$COLLECTOR" ] || fail "no -collector given: the glidein does not know which pool to join"

config_value() {  # KEY [DEFAULT]: the last value of KEY in glidein_config
    value=$(sed -n "s/^$1=//p" "$CONFIG" | tail -n 1)
    printf '%s' "${value:-${2:-}}"
}

CONDOR_MASTER=""
if [ "$MODE" != standin ]; then
    if [ -n "$CONDOR_TARBALL" ]; then
        mkdir -p "$WORK_DIR/condor" && tar -xzf "$FILES/$CONDOR_TARBALL" -C "$WORK_DIR/condor" ||
            fail "cannot unpack $CONDOR_TARBALL"
        CONDOR_MASTER=$(find "$WORK_DIR/condor" -path '*/sbin/condor_master' -type f | head -n 1)
        [ -n "$CONDOR_MASTER" ] && PATH="$(dirname "$CONDOR_MASTER"):$(dirname "$(dirname "$CONDOR_MASTER")")/bin:$PATH"
    fi
    [ -n "$CONDOR_MASTER" ] || CONDOR_MASTER=$(command -v condor_master 2>/dev/null || true)
fi
if [ "$MODE" = condor ] && [ -z "$CONDOR_MASTER" ]; then
    fail "-mode condor but no condor_master on PATH and no condor tarball in the manifest"
fi

write_condor_config() {
    local_dir="$WORK_DIR/condor_local"
    mkdir -p "$local_dir/log" "$local_dir/execute" "$local_dir/spool" "$local_dir/lock" "$local_dir/run" "$WORK_DIR/tokens.d"
    if [ -n "$IDTOKEN" ]; then
        cp "$IDTOKEN" "$WORK_DIR/tokens.d/glidein.token" || fail "cannot copy the IDTOKEN $IDTOKEN"
    fi
    collector=${COLLECTOR#*://}
    cpus=$(config_value GLIDEIN_CPUS "$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)")
    start=$(config_value GLIDEIN_Start True)
    extra_attrs=$(sed -n 's/^\(GLIDEIN_[A-Za-z0-9_]*\)=.*/\1/p' "$CONFIG" | sort -u | tr '\n' ' ')
    cat >"$WORK_DIR/condor_config" <<EOF
# Written by glidein_startup.sh for glidein $GLIDEIN_ID; regenerated at every start.
LOCAL_DIR = $local_dir
LOG = \$(LOCAL_DIR)/log
EXECUTE = \$(LOCAL_DIR)/execute
SPOOL = \$(LOCAL_DIR)/spool
LOCK = \$(LOCAL_DIR)/lock
RUN = \$(LOCAL_DIR)/run
CONDOR_HOST = ${collector%%:*}
COLLECTOR_HOST = $collector
DAEMON_LIST = MASTER, STARTD
USE_SHARED_PORT = False
MASTER_UPDATE_INTERVAL = 60
UID_DOMAIN = $GLIDEIN_ID
FILESYSTEM_DOMAIN = $GLIDEIN_ID
SEC_DEFAULT_AUTHENTICATION_METHODS = IDTOKENS, SSL
SEC_TOKEN_DIRECTORY = $WORK_DIR/tokens.d
SEC_DEFAULT_ENCRYPTION = REQUIRED
SEC_DEFAULT_INTEGRITY = REQUIRED
GSI_DAEMON_PROXY = $PROXY
X509_USER_PROXY = $PROXY
IsGlidein = True
GLIDEIN_ToRetire = $RETIRE_AT
GLIDEIN_ToDie = $DIE_AT
# Stop matching at the retire time; end at the hard limit; leave when idle too long.
START = (time() < GLIDEIN_ToRetire) && ($start)
STARTD_NOCLAIM_SHUTDOWN = $IDLE
STARTD.DAEMON_SHUTDOWN = (time() > GLIDEIN_ToDie) || (time() > GLIDEIN_ToRetire && State == "Unclaimed")
MASTER.DAEMON_SHUTDOWN_FAST = time() > GLIDEIN_ToDie + 300
MASTER.DAEMON_SHUTDOWN = STARTD_StartTime =?= 0
MaxJobRetirementTime = GLIDEIN_ToDie - time()
NUM_SLOTS = 1
NUM_SLOTS_TYPE_1 = 1
SLOT_TYPE_1 = cpus=$cpus, memory=100%, disk=100%
SLOT_TYPE_1_PARTITIONABLE = True
STARTD_ATTRS = \$(STARTD_ATTRS) IsGlidein GLIDEIN_ToRetire GLIDEIN_ToDie $extra_attrs
EOF
    # glidein_config values become startd attributes (strings quoted, numbers as they are).
    sed -n 's/^\(GLIDEIN_[A-Za-z0-9_]*\)=\(.*\)$/\1 \2/p' "$CONFIG" | while read -r key value; do
        case $key in GLIDEIN_ToRetire | GLIDEIN_ToDie | GLIDEIN_Start) continue ;; esac
        case $value in
            '' | *[!0-9]*) printf '%s = "%s"\n' "$key" "$(printf '%s' "$value" | sed 's/\\/\\\\/g; s/"/\\"/g')" ;;
            *) printf '%s = %s\n' "$key" "$value" ;;
        esac
    done >>"$WORK_DIR/condor_config"
}

run_child() {  # wait for a background child so that TERM reaches us at once
    "$@" &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    CHILD=""
    return $rc
}

if [ -n "$CONDOR_MASTER" ]; then
    RUN_MODE=condor
    write_condor_config
    log "starting $CONDOR_MASTER -f (config $WORK_DIR/condor_config)"
    CONDOR_CONFIG="$WORK_DIR/condor_config"
    export CONDOR_CONFIG
    run_child "$CONDOR_MASTER" -f
    rc=$?
else
    RUN_MODE=standin
    STARTD=""
    for candidate in "$FILES/gwms_startd.py" "$(dirname "$0")/gwms_startd.py"; do
        if [ -f "$candidate" ]; then STARTD=$candidate; break; fi
    done
    [ -n "$STARTD" ] || fail "no condor_master and no gwms_startd.py: add one of them to the web area"
    log "no condor_master: starting the stand-in startd $STARTD"
    run_child "$PYTHON" "$STARTD" --collector "$COLLECTOR" ${IDTOKEN:+--token-file "$IDTOKEN"} \
        --config "$CONFIG" --glidein-id "$GLIDEIN_ID" --factory "$FACTORY" --entry "$ENTRY" \
        --client "$CLIENT" --work-dir "$WORK_DIR" --retire-at "$RETIRE_AT" --die-at "$DIE_AT" \
        --idle "$IDLE" --poll "$(config_value GLIDEIN_Poll_Interval 1)" \
        --summary "$WORK_DIR/log/startd-summary.json" 2>>"$WORK_DIR/log/startd.log"
    rc=$?
fi

if [ $rc -eq 0 ]; then
    STATUS=ok
    REASON="the $RUN_MODE startd ended normally"
else
    REASON="the $RUN_MODE startd exited with $rc"
fi
log "glidein $GLIDEIN_ID done: $REASON"
write_summary $rc
exit $rc
