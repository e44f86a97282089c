#!/usr/bin/env bash
# Local infrastructure for Ping'an Dispatch, without Docker or systemd:
# PostgreSQL, Mosquitto (MQTT) and a single-node KRaft Kafka, all bound to
# 127.0.0.1, all data under $PINGAN_STACK_DIR (default <repo>/.stack).
#
#   deploy/stack.sh up       install missing packages, start everything (idempotent)
#   deploy/stack.sh down     stop everything, keep data (idempotent)
#   deploy/stack.sh status   one line per service; exit 0 if all run, 3 otherwise
#   deploy/stack.sh wipe     down + delete the stack dir
#   deploy/stack.sh env      print `export PINGAN_...=...` lines:  eval "$(deploy/stack.sh env)"
#
# Ports (defaults): PINGAN_PG_PORT=55432 PINGAN_MQTT_PORT=18830
#                   PINGAN_KAFKA_PORT=19092 PINGAN_KAFKA_CONTROLLER_PORT=19093
# Optional second Kafka listener for a TCP proxy in front of the broker (the fault suite):
#   PINGAN_KAFKA_PROXIED_PORT=<port the broker listens on>
#   PINGAN_KAFKA_PROXIED_ADVERTISED=<host:port of the proxy, advertised to its clients>
# MQTT platform account: PINGAN_MQTT_USERNAME / PINGAN_MQTT_PASSWORD
#   (defaults pingan-platform / pingan-platform-dev), only used to create the
#   password file on the first `up`.
# Ports/credentials used by `up` are remembered in $PINGAN_STACK_DIR/stack.env, so
# a later `env`/`status` reports them without the variables being set again; an
# explicitly set variable always wins (takes effect on the next start).
#
# Must run as root (apt-get, and postgres is started via `runuser -u postgres`).
set -Eeuo pipefail
shopt -u patsub_replacement 2>/dev/null || true # '&' in ${x//a/b} must stay literal

export PATH="$PATH:/usr/sbin:/sbin" # mosquitto lives in /usr/sbin
export LC_ALL=C.UTF-8

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_DIR=$(dirname "$DEPLOY_DIR")
STACK=${PINGAN_STACK_DIR:-$REPO_DIR/.stack}
STACK=$(realpath -m -- "$STACK") # absolute, normalized, need not exist yet

TIMEOUT=60      # seconds to wait for a service to come up
# Kafka replays __consumer_offsets before it serves: with the groups of many earlier runs
# (every benchmark and test module makes its own) that took over 60 s here.
KAFKA_START_TIMEOUT=${PINGAN_KAFKA_START_TIMEOUT:-180}
STOP_TIMEOUT=30 # seconds to wait for a service to exit before SIGKILL

PG_DIR=$STACK/pg
PGDATA=$PG_DIR/data
PG_RUN=$PG_DIR/run
PG_LOG=$PG_DIR/postgres.log
MQ_DIR=$STACK/mosquitto
MQ_CONF=$MQ_DIR/mosquitto.conf
MQ_PASSWD=$MQ_DIR/passwd
MQ_ACL=$MQ_DIR/acl
MQ_PID=$MQ_DIR/mosquitto.pid
MQ_LOG=$MQ_DIR/mosquitto.log
KAFKA_DIR=$STACK/kafka
KAFKA_LIBS=$KAFKA_DIR/libs
KAFKA_CONF=$KAFKA_DIR/server.properties
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_LOGS=$KAFKA_DIR/logs
KAFKA_OUT=$KAFKA_DIR/kafka.out
KAFKA_PID=$KAFKA_DIR/kafka.pid
KAFKA_POM=$DEPLOY_DIR/kafka/pom.xml
STACK_ENV=$STACK/stack.env # remembered ports/credentials
MARKER=$STACK/.pingan-stack  # `wipe` only deletes a directory carrying this marker

# ---------------------------------------------------------------- helpers

say() { printf '%s\n' "$*"; }
die() {
	printf '\nstack.sh: ERROR: %s\n' "$*" >&2
	exit 1
}
# die_log MESSAGE LOGFILE... : fail, showing the tail of each existing log.
die_log() {
	local msg=$1 f
	shift
	printf '\nstack.sh: ERROR: %s\n' "$msg" >&2
	for f in "$@"; do
		[[ -s $f ]] || continue
		printf -- '----- last 40 lines of %s -----\n' "$f" >&2
		# (mosquitto logs a "Saving in-memory database" line every ~2 s: skip them)
		grep -v 'Saving in-memory database' "$f" | tail -n 40 >&2
	done
	exit 1
}
trap 'die "unexpected failure (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

# Read KEY=VALUE lines remembered by a previous `up`.
declare -A REC=()
if [[ -f $STACK_ENV ]]; then
	while IFS='=' read -r k v; do [[ -n $k ]] && REC[$k]=$v; done <"$STACK_ENV"
fi
# remember KEY VALUE: update one line of stack.env.
remember() {
	local tmp
	tmp=$(mktemp "$STACK/.stack.env.XXXXXX")
	{ [[ -f $STACK_ENV ]] && grep -v "^$1=" "$STACK_ENV" || true; } >"$tmp"
	printf '%s=%s\n' "$1" "$2" >>"$tmp"
	chmod 600 "$tmp"
	mv -f "$tmp" "$STACK_ENV"
}

# Precedence: explicit env var > remembered by last `up` > default.
PG_PORT=${PINGAN_PG_PORT:-${REC[PG_PORT]:-55432}}
MQTT_PORT=${PINGAN_MQTT_PORT:-${REC[MQTT_PORT]:-18830}}
KAFKA_PORT=${PINGAN_KAFKA_PORT:-${REC[KAFKA_PORT]:-19092}}
KAFKA_CTRL_PORT=${PINGAN_KAFKA_CONTROLLER_PORT:-${REC[KAFKA_CONTROLLER_PORT]:-19093}}
KAFKA_PROXIED_PORT=${PINGAN_KAFKA_PROXIED_PORT-${REC[KAFKA_PROXIED_PORT]:-}}
KAFKA_PROXIED_ADV=${PINGAN_KAFKA_PROXIED_ADVERTISED-${REC[KAFKA_PROXIED_ADVERTISED]:-}}
MQTT_USER=${PINGAN_MQTT_USERNAME:-${REC[MQTT_USERNAME]:-pingan-platform}}
MQTT_PASS=${PINGAN_MQTT_PASSWORD:-${REC[MQTT_PASSWORD]:-pingan-platform-dev}}

for p in "$PG_PORT" "$MQTT_PORT" "$KAFKA_PORT" "$KAFKA_CTRL_PORT"; do
	[[ $p =~ ^[0-9]+$ ]] && ((p > 0 && p < 65536)) || die "invalid port: '$p'"
done
if [[ -n $KAFKA_PROXIED_PORT ]]; then
	[[ $KAFKA_PROXIED_PORT =~ ^[0-9]+$ ]] && ((KAFKA_PROXIED_PORT > 0 && KAFKA_PROXIED_PORT < 65536)) ||
		die "invalid port: '$KAFKA_PROXIED_PORT'"
	[[ $KAFKA_PROXIED_ADV =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]] ||
		die "PINGAN_KAFKA_PROXIED_ADVERTISED must be host:port when PINGAN_KAFKA_PROXIED_PORT is set"
fi
[[ $STACK != / ]] || die "PINGAN_STACK_DIR must not be /"
[[ $STACK =~ [[:space:]] ]] && die "PINGAN_STACK_DIR must not contain whitespace: '$STACK'"
[[ $MQTT_USER =~ ^[A-Za-z0-9._-]+$ ]] || die "PINGAN_MQTT_USERNAME must match [A-Za-z0-9._-]+"

# A pid counts as running only if the process exists, is not a zombie (the
# daemons get reparented; a non-reaping pid 1 would leave zombies) and its
# command line contains NEEDLE (guards against pid reuse after a reboot).
pid_running() {
	local pid=$1 needle=$2 state
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z && $state != X ]] || return 1
	[[ " $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == *" $needle "* ]]
}
# pidfile_pid FILE NEEDLE: print the live pid from FILE; remove FILE if stale.
pidfile_pid() {
	local file=$1 needle=$2 pid
	[[ -f $file ]] || return 1
	pid=$(head -n 1 "$file" 2>/dev/null | tr -dc '0-9')
	if pid_running "$pid" "$needle"; then
		printf '%s\n' "$pid"
		return 0
	fi
	rm -f "$file" # stale
	return 1
}
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
ensure_port_free() { # NAME PORT
	port_open "$2" && die "$1: port $2 on 127.0.0.1 is already in use by another process" || true
}
# stop_pid NAME PID NEEDLE: SIGTERM, wait up to STOP_TIMEOUT s, then SIGKILL.
stop_pid() {
	local name=$1 pid=$2 needle=$3 i
	printf '%s: stopping (pid %s) ...' "$name" "$pid"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
		pid_running "$pid" "$needle" || {
			say " stopped"
			return 0
		}
		sleep 0.2
	done
	kill -KILL "$pid" 2>/dev/null || true
	sleep 0.5
	say " killed (did not exit within ${STOP_TIMEOUT}s after SIGTERM)"
}
# render TEMPLATE OUT KEY=VALUE...: replace @KEY@ tokens, refuse leftovers.
render() {
	local tpl=$1 out=$2 content kv left
	shift 2
	content=$(<"$tpl")
	for kv in "$@"; do content=${content//"@${kv%%=*}@"/"${kv#*=}"}; done
	left=$(grep -o '@[A-Z][A-Z_]*@' <<<"$content" | sort -u | tr '\n' ' ') || true
	[[ -z $left ]] || die "$tpl: unreplaced tokens: $left"
	printf '%s\n' "$content" >"$out.tmp"
	mv -f "$out.tmp" "$out"
}
# with_lock: serialize up/down/wipe of one stack dir.
with_lock() {
	exec 9>"$STACK/.lock"
	flock -w 120 9 || die "another stack.sh holds $STACK/.lock"
}

# ---------------------------------------------------------------- packages

# Newest installed server, unless the data dir was created by a specific one.
pg_bin() {
	local d v
	if [[ -s $PGDATA/PG_VERSION ]]; then
		v=$(<"$PGDATA/PG_VERSION")
		d=/usr/lib/postgresql/$v/bin
		[[ -x $d/pg_ctl ]] && { say "$d"; return 0; }
	fi
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1) || true
	[[ -n $d && -x $d/pg_ctl && -x $d/initdb && -x $d/psql ]] && say "$d"
}

ensure_packages() {
	local need=()
	pg_bin >/dev/null || need+=(postgresql)
	command -v mosquitto >/dev/null && command -v mosquitto_passwd >/dev/null || need+=(mosquitto)
	command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
	command -v java >/dev/null || need+=(default-jre-headless)
	command -v mvn >/dev/null || need+=(maven)
	((${#need[@]})) || return 0
	((EUID == 0)) || die "missing packages (${need[*]}) and not root"
	local log=$STACK/apt.log
	printf 'packages: apt-get install %s ...' "${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	{ apt-get update && apt-get install -y "${need[@]}"; } >"$log" 2>&1 ||
		die_log "apt-get failed" "$log"
	say " done"
	# Note: on Debian the postgresql/mosquitto packages may also start their own
	# system instances (ports 5432/1883); ours use different ports and dirs.
}

# ---------------------------------------------------------------- postgres

# 9>&-: daemons must not inherit the lock fd (a running postgres would hold it).
as_postgres() { (cd / && runuser -u postgres -- "$@") 9>&-; }

# The postgres user must be able to traverse every directory down to $PG_DIR.
# Checked top-down (a closed parent makes every child look closed).
ensure_postgres_can_traverse() {
	local d=$STACK dirs=()
	while :; do
		dirs=("$d" "${dirs[@]}")
		[[ $d == / ]] && break
		d=$(dirname "$d")
	done
	for d in "${dirs[@]}"; do
		as_postgres test -x "$d" && continue
		chmod o+x "$d"
		say "postgres: note: chmod o+x $d (postgres must traverse it)"
	done
}

pg_running_pid() { pidfile_pid "$PGDATA/postmaster.pid" "$PGDATA"; }
# Port of the running server (line 4 of postmaster.pid).
pg_running_port() { sed -n 4p "$PGDATA/postmaster.pid" 2>/dev/null; }

pg_write_conf() {
	# Included from postgresql.conf; rewritten on every start so port changes apply.
	cat >"$PGDATA/pingan.conf.tmp" <<EOF
# Managed by deploy/stack.sh - rewritten on every start. Edit the script instead.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
max_connections = 200
password_encryption = 'scram-sha-256'

# Durability stays ON (fsync, full_page_writes, synchronous_commit).
fsync = on
full_page_writes = on
synchronous_commit = on

# Light tuning for a dev box.
shared_buffers = 256MB
work_mem = 8MB
maintenance_work_mem = 128MB
effective_cache_size = 1GB
max_wal_size = 1GB
# The outbox and notifications are queue tables (see migration 0010): look for tables to
# vacuum every 10 s, not every minute, so dead rows do not pile up between two looks.
autovacuum_naptime = 10s
# Per-statement figures, collected only where switched on (the benchmark's --statements turns
# tracking on for its own database): loaded at start, tracking nothing by default.
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = 'none'
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = 1000
EOF
	chown postgres:postgres "$PGDATA/pingan.conf.tmp"
	chmod 600 "$PGDATA/pingan.conf.tmp"
	mv -f "$PGDATA/pingan.conf.tmp" "$PGDATA/pingan.conf"
}

pg_psql_admin() { # runs as OS user postgres over the unix socket (peer auth)
	local bin=$1 port=$2
	shift 2
	as_postgres "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_RUN" -p "$port" -U postgres -d postgres "$@"
}

pg_ensure_role_db() {
	local bin=$1 port=$2 log=$PG_DIR/setup.log
	{
		pg_psql_admin "$bin" "$port" -c "DO \$\$ BEGIN
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pingan') THEN
				CREATE ROLE pingan LOGIN SUPERUSER CREATEDB PASSWORD 'pingan';
			ELSE
				ALTER ROLE pingan LOGIN SUPERUSER CREATEDB PASSWORD 'pingan';
			END IF; END \$\$;"
		if [[ $(pg_psql_admin "$bin" "$port" -Atc "SELECT 1 FROM pg_database WHERE datname = 'pingan'") != 1 ]]; then
			pg_psql_admin "$bin" "$port" -c 'CREATE DATABASE pingan OWNER pingan'
		fi
	} >"$log" 2>&1 || die_log "postgres: creating role/database pingan failed" "$log" "$PG_LOG"
	# Final check exactly as the app connects: TCP + scram password.
	PGPASSWORD=pingan "$bin/psql" -X -q -h 127.0.0.1 -p "$port" -U pingan -d pingan -Atc 'SELECT 1' >"$log" 2>&1 ||
		die_log "postgres: cannot log in as pingan over TCP" "$log" "$PG_LOG"
}

pg_up() {
	local bin pid port
	bin=$(pg_bin) || die "postgres: no server binaries under /usr/lib/postgresql/*/bin"
	if pid=$(pg_running_pid); then
		port=$(pg_running_port)
		say "postgres: already running (pid $pid, port $port)"
		[[ $port == "$PG_PORT" ]] || say "postgres: warning: requested port $PG_PORT ignored while running; run 'down' first"
		pg_ensure_role_db "$bin" "$port"
		return 0
	fi
	mkdir -p "$PG_DIR"
	chown postgres:postgres "$PG_DIR"
	chmod 700 "$PG_DIR"
	ensure_postgres_can_traverse
	# Unix socket paths are limited to 107 bytes.
	((${#PG_RUN} + 20 < 107)) || die "postgres: socket dir path too long ($PG_RUN); use a shorter PINGAN_STACK_DIR"
	install -d -o postgres -g postgres -m 700 "$PG_RUN"

	if [[ ! -s $PGDATA/PG_VERSION ]]; then
		[[ -d $PGDATA && -n $(ls -A "$PGDATA") ]] && die "postgres: $PGDATA exists but is not a data dir; move it away or 'wipe'"
		printf 'postgres: initdb %s ...' "$PGDATA"
		# peer auth on the unix socket (only used by this script as OS user
		# postgres), scram passwords over TCP.
		as_postgres "$bin/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
			--auth-local=peer --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 ||
			die_log "postgres: initdb failed" "$PG_DIR/initdb.log"
		printf "\n# Ping'an Dispatch local stack (deploy/stack.sh)\ninclude = 'pingan.conf'\n" >>"$PGDATA/postgresql.conf"
		say " done"
	fi
	pg_write_conf
	ensure_port_free postgres "$PG_PORT"

	printf 'postgres: starting on %s ...' "$PG_PORT"
	as_postgres "$bin/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t "$TIMEOUT" -s start >"$PG_DIR/pg_ctl.out" 2>&1 ||
		die_log "postgres: failed to start (or not ready within ${TIMEOUT}s)" "$PG_DIR/pg_ctl.out" "$PG_LOG"
	pg_ensure_role_db "$bin" "$PG_PORT"
	remember PG_PORT "$PG_PORT"
	say " ready (pid $(pg_running_pid))"
}

pg_down() {
	local bin pid
	if ! pid=$(pg_running_pid); then
		say "postgres: not running"
		return 0
	fi
	bin=$(pg_bin) || die "postgres: no server binaries found"
	printf 'postgres: stopping (pid %s) ...' "$pid"
	# fast = roll back open transactions, then a clean shutdown checkpoint.
	if as_postgres "$bin/pg_ctl" -D "$PGDATA" -m fast -w -t "$STOP_TIMEOUT" -s stop >"$PG_DIR/pg_ctl.out" 2>&1; then
		say " stopped"
		return 0
	fi
	# Immediate shutdown: no checkpoint, WAL replay on next start (no data loss).
	say " not stopped after ${STOP_TIMEOUT}s, forcing immediate shutdown"
	as_postgres "$bin/pg_ctl" -D "$PGDATA" -m immediate -w -t "$STOP_TIMEOUT" -s stop >>"$PG_DIR/pg_ctl.out" 2>&1 ||
		die_log "postgres: could not stop pid $pid" "$PG_DIR/pg_ctl.out" "$PG_LOG"
}

# ---------------------------------------------------------------- mosquitto

mq_running_pid() { pidfile_pid "$MQ_PID" "$MQ_CONF"; }

# ACL: repo copy, with the platform user renamed if PINGAN_MQTT_USERNAME differs.
# Returns 0 when the copy changed.
mq_render_acl() {
	mkdir -p "$MQ_DIR"
	sed "s/^user pingan-platform\$/user $MQTT_USER/" "$DEPLOY_DIR/mosquitto/acl" >"$MQ_ACL.tmp"
	if [[ -f $MQ_ACL ]] && cmp -s "$MQ_ACL.tmp" "$MQ_ACL"; then
		rm -f "$MQ_ACL.tmp"
		return 1
	fi
	mv -f "$MQ_ACL.tmp" "$MQ_ACL"
	return 0
}

mq_up() {
	local pid i
	if pid=$(mq_running_pid); then
		say "mosquitto: already running (pid $pid, port ${REC[MQTT_PORT]:-$MQTT_PORT})"
		# A changed ACL in the repo takes effect in the running broker (SIGHUP reloads it).
		if mq_render_acl; then
			kill -HUP "$pid" && say "mosquitto: ACL changed, reloaded"
		fi
		[[ ${REC[MQTT_PORT]:-$MQTT_PORT} == "$MQTT_PORT" ]] || say "mosquitto: warning: requested port $MQTT_PORT ignored while running; run 'down' first"
		return 0
	fi
	mkdir -p "$MQ_DIR/data"

	# Created once; afterwards the platform app owns this file (it rewrites it
	# atomically and SIGHUPs the broker). Never overwritten here.
	if [[ ! -f $MQ_PASSWD ]]; then
		(umask 077 && mosquitto_passwd -b -c "$MQ_PASSWD" "$MQTT_USER" "$MQTT_PASS") >"$MQ_DIR/passwd.log" 2>&1 ||
			die_log "mosquitto: mosquitto_passwd failed" "$MQ_DIR/passwd.log"
		chmod 600 "$MQ_PASSWD"
		remember MQTT_USERNAME "$MQTT_USER"
		remember MQTT_PASSWORD "$MQTT_PASS"
		say "mosquitto: created $MQ_PASSWD with platform account '$MQTT_USER'"
	fi

	mq_render_acl || true
	render "$DEPLOY_DIR/mosquitto/mosquitto.conf.in" "$MQ_CONF" \
		MQTT_PORT="$MQTT_PORT" PASSWORD_FILE="$MQ_PASSWD" ACL_FILE="$MQ_ACL" \
		DATA_DIR="$MQ_DIR/data" PID_FILE="$MQ_PID" LOG_FILE="$MQ_LOG"
	ensure_port_free mosquitto "$MQTT_PORT"

	printf 'mosquitto: starting on %s ...' "$MQTT_PORT"
	rm -f "$MQ_PID"
	: >>"$MQ_LOG"
	# -d: daemonize. Config syntax errors fail here; bind/auth-file errors happen
	# after the fork and only show up in the log, hence the wait loop below.
	mosquitto -c "$MQ_CONF" -d >"$MQ_DIR/start.err" 2>&1 9>&- ||
		die_log "mosquitto: failed to start" "$MQ_DIR/start.err" "$MQ_LOG"
	for ((i = 0; i < TIMEOUT * 5; i++)); do
		if pid=$(mq_running_pid) && port_open "$MQTT_PORT"; then
			remember MQTT_PORT "$MQTT_PORT"
			say " ready (pid $pid)"
			mq_check_login
			return 0
		fi
		# The daemon writes its pid file right after forking, before binding the
		# port; no live pid after 2 s means it died (see the log, e.g. port in use).
		if ((i > 10)) && ! mq_running_pid >/dev/null; then break; fi
		sleep 0.2
	done
	die_log "mosquitto: not serving on 127.0.0.1:$MQTT_PORT within ${TIMEOUT}s" "$MQ_DIR/start.err" "$MQ_LOG"
}
# Log in with the platform account (warn only: the app may have changed it).
mq_check_login() {
	mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -u "$MQTT_USER" -P "$MQTT_PASS" \
		-t '$SYS/broker/version' -C 1 -W 5 >/dev/null 2>&1 ||
		say "mosquitto: warning: platform account '$MQTT_USER' could not log in / read \$SYS (password file changed?)"
}

mq_down() {
	local pid
	if ! pid=$(mq_running_pid); then
		say "mosquitto: not running"
		return 0
	fi
	# SIGTERM makes mosquitto write its persistence db before exiting.
	stop_pid mosquitto "$pid" "$MQ_CONF"
	rm -f "$MQ_PID"
}

# ---------------------------------------------------------------- kafka

kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM" | head -n 1; }
kafka_running_pid() { pidfile_pid "$KAFKA_PID" "$KAFKA_CONF"; }

# Jars come from Maven Central via deploy/kafka/pom.xml. The marker records the
# version and the pom's hash, so bumping the version (or any pom edit) re-fetches.
kafka_fetch_libs() {
	local want have=
	want="$(kafka_version) $(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
	[[ -f $KAFKA_LIBS/.pingan-libs ]] && have=$(<"$KAFKA_LIBS/.pingan-libs")
	[[ $have == "$want" ]] && return 0
	printf 'kafka: fetching jars for %s with maven ...' "$(kafka_version)"
	rm -rf "$KAFKA_LIBS.new"
	mvn -q -B dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS.new" -DincludeScope=runtime \
		-f "$KAFKA_POM" >"$KAFKA_DIR/mvn.log" 2>&1 || die_log "kafka: maven download failed" "$KAFKA_DIR/mvn.log"
	ls "$KAFKA_LIBS.new"/kafka_2.13-*.jar >/dev/null 2>&1 || die_log "kafka: no kafka_2.13 jar downloaded" "$KAFKA_DIR/mvn.log"
	printf '%s\n' "$want" >"$KAFKA_LIBS.new/.pingan-libs"
	rm -rf "$KAFKA_LIBS"
	mv "$KAFKA_LIBS.new" "$KAFKA_LIBS"
	say " done"
}

# Log config for one-shot tools (StorageTool): warnings to stderr only.
kafka_tools_log4j() {
	printf '%s\n' 'log4j.rootLogger=WARN, stderr' \
		'log4j.appender.stderr=org.apache.log4j.ConsoleAppender' \
		'log4j.appender.stderr.Target=System.err' \
		'log4j.appender.stderr.layout=org.apache.log4j.PatternLayout' \
		'log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n' >"$KAFKA_DIR/tools-log4j.properties"
}
kafka_java_tool() { java -Dlog4j.configuration="file:$KAFKA_DIR/tools-log4j.properties" -cp "$KAFKA_LIBS/*" "$@"; }

# Real readiness: a metadata round trip through aiokafka when the venv has it.
kafka_metadata_ok() {
	local py=$REPO_DIR/.venv/bin/python
	[[ -x $py ]] && "$py" -c 'import aiokafka' 2>/dev/null || return 2
	timeout 15 "$py" - "127.0.0.1:$KAFKA_PORT" <<'PY' >/dev/null 2>&1
import asyncio, sys
from aiokafka.admin import AIOKafkaAdminClient

async def main():
    admin = AIOKafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=5000)
    await admin.start()
    try:
        await admin.describe_cluster()
        await admin.list_topics()
    finally:
        await admin.close()

asyncio.run(main())
PY
}

kafka_up() {
	local pid i off=0 started=0 rc
	if pid=$(kafka_running_pid); then
		say "kafka: already running (pid $pid, port ${REC[KAFKA_PORT]:-$KAFKA_PORT})"
		[[ ${REC[KAFKA_PORT]:-$KAFKA_PORT} == "$KAFKA_PORT" ]] || say "kafka: warning: requested port $KAFKA_PORT ignored while running; run 'down' first"
		return 0
	fi
	mkdir -p "$KAFKA_DIR" "$KAFKA_DATA" "$KAFKA_LOGS"
	kafka_fetch_libs
	kafka_tools_log4j
	local extra_listeners="" extra_advertised=""
	if [[ -n $KAFKA_PROXIED_PORT ]]; then
		extra_listeners=",PROXIED://127.0.0.1:$KAFKA_PROXIED_PORT"
		extra_advertised=",PROXIED://$KAFKA_PROXIED_ADV"
	fi
	render "$DEPLOY_DIR/kafka/server.properties.in" "$KAFKA_CONF" \
		KAFKA_PORT="$KAFKA_PORT" KAFKA_CONTROLLER_PORT="$KAFKA_CTRL_PORT" KAFKA_DATA_DIR="$KAFKA_DATA" \
		KAFKA_EXTRA_LISTENERS="$extra_listeners" KAFKA_EXTRA_ADVERTISED="$extra_advertised"

	# Format the KRaft storage exactly once (meta.properties marks it).
	if [[ ! -f $KAFKA_DATA/meta.properties ]]; then
		local cluster_id
		printf 'kafka: formatting storage ...'
		cluster_id=$(kafka_java_tool kafka.tools.StorageTool random-uuid 2>"$KAFKA_DIR/format.log") ||
			die_log "kafka: StorageTool random-uuid failed" "$KAFKA_DIR/format.log"
		kafka_java_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_CONF" >>"$KAFKA_DIR/format.log" 2>&1 ||
			die_log "kafka: StorageTool format failed" "$KAFKA_DIR/format.log"
		say " done (cluster id $cluster_id)"
	fi
	ensure_port_free kafka "$KAFKA_PORT"
	ensure_port_free kafka-controller "$KAFKA_CTRL_PORT"
	[[ -z $KAFKA_PROXIED_PORT ]] || ensure_port_free kafka-proxied "$KAFKA_PROXIED_PORT"

	# The JVM settings of Kafka's own start script (kafka-run-class.sh): G1 aiming at 20 ms pauses,
	# not the JVM's default of 200 ms (young collections here took 26 ms on average, and every
	# record in flight waits for them).
	local -a jvm_opts=(-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
		-XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true)
	printf 'kafka: starting on %s (controller %s) ...' "$KAFKA_PORT" "$KAFKA_CTRL_PORT"
	[[ -f $KAFKA_LOGS/server.log ]] && off=$(stat -c %s "$KAFKA_LOGS/server.log")
	rm -f "$KAFKA_PID"
	# The inner bash writes its own pid and then execs java (same pid), so the pid
	# file is right even if setsid has to fork. setsid+nohup: the broker survives
	# the end of this script and of the calling terminal/CI step.
	nohup setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$KAFKA_PID" \
		java -Xms512m -Xmx1g -XX:+ExitOnOutOfMemoryError "${jvm_opts[@]}" \
		-Dlog4j.configuration="file:$DEPLOY_DIR/kafka/log4j.properties" -Dkafka.logs.dir="$KAFKA_LOGS" \
		-cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF" >"$KAFKA_OUT" 2>&1 </dev/null 9>&- &

	for ((i = 0; i < KAFKA_START_TIMEOUT * 2; i++)); do
		sleep 0.5
		if ! pid=$(kafka_running_pid); then
			((i < 4)) && continue # pid file not written yet
			die_log "kafka: process exited during startup" "$KAFKA_OUT" "$KAFKA_LOGS/server.log"
		fi
		port_open "$KAFKA_PORT" || continue
		if ((!started)); then
			# Only look at log lines written by this start.
			if (($(stat -c %s "$KAFKA_LOGS/server.log" 2>/dev/null || echo 0) < off)); then off=0; fi
			# grep reads it all (not -q): under pipefail, a grep that stops at the first match
			# fails the pipeline whenever tail still has more to write (SIGPIPE), which is every
			# time a start logs more than a pipe holds; the wait then ran out with Kafka serving.
			tail -c "+$((off + 1))" "$KAFKA_LOGS/server.log" 2>/dev/null | grep 'Kafka Server started' >/dev/null || continue
			started=1
		fi
		rc=0
		kafka_metadata_ok || rc=$?
		if ((rc == 0 || rc == 2)); then # 2 = no aiokafka: port + log line only
			remember KAFKA_PORT "$KAFKA_PORT"
			remember KAFKA_CONTROLLER_PORT "$KAFKA_CTRL_PORT"
			remember KAFKA_PROXIED_PORT "$KAFKA_PROXIED_PORT"
			remember KAFKA_PROXIED_ADVERTISED "$KAFKA_PROXIED_ADV"
			local note=""
			((rc == 0)) || note=", metadata not checked: no .venv with aiokafka"
			say " ready (pid $pid$note)"
			return 0
		fi
	done
	die_log "kafka: not serving on 127.0.0.1:$KAFKA_PORT within ${KAFKA_START_TIMEOUT}s" "$KAFKA_OUT" "$KAFKA_LOGS/server.log"
}

kafka_down() {
	local pid
	if ! pid=$(kafka_running_pid); then
		say "kafka: not running"
		return 0
	fi
	stop_pid kafka "$pid" "$KAFKA_CONF"
	rm -f "$KAFKA_PID"
}

# ---------------------------------------------------------------- commands

cmd_up() {
	((EUID == 0)) || die "run as root (postgres is started via runuser, packages via apt-get)"
	if [[ -d $STACK && ! -f $MARKER && -n $(ls -A "$STACK") ]]; then
		die "$STACK exists, is not empty and is not a stack dir (no $(basename "$MARKER")); refusing to use it"
	fi
	mkdir -p "$STACK"
	touch "$MARKER"
	with_lock
	ensure_packages
	pg_up
	mq_up
	kafka_up
	say "stack: up (data in $STACK). Use: eval \"\$($0 env)\""
}

cmd_down() {
	[[ -d $STACK ]] || {
		say "stack: nothing to stop ($STACK does not exist)"
		return 0
	}
	with_lock
	kafka_down
	mq_down
	pg_down
}

cmd_status() {
	local pid all=0 port
	if pid=$(pg_running_pid); then
		port=$(pg_running_port)
		say "postgres:  running  pid $pid  port $port"
	else
		say "postgres:  stopped  port $PG_PORT"
		all=3
	fi
	if pid=$(mq_running_pid); then
		say "mosquitto: running  pid $pid  port ${REC[MQTT_PORT]:-$MQTT_PORT}"
	else
		say "mosquitto: stopped  port $MQTT_PORT"
		all=3
	fi
	if pid=$(kafka_running_pid); then
		say "kafka:     running  pid $pid  port ${REC[KAFKA_PORT]:-$KAFKA_PORT} (controller ${REC[KAFKA_CONTROLLER_PORT]:-$KAFKA_CTRL_PORT})"
	else
		say "kafka:     stopped  port $KAFKA_PORT (controller $KAFKA_CTRL_PORT)"
		all=3
	fi
	return $all
}

cmd_env() {
	local kv
	for kv in \
		"PINGAN_STACK_DIR=$STACK" \
		"PINGAN_DATABASE_URL=postgresql://pingan:pingan@127.0.0.1:$PG_PORT/pingan" \
		"PINGAN_MQTT_HOST=127.0.0.1" \
		"PINGAN_MQTT_PORT=$MQTT_PORT" \
		"PINGAN_MQTT_USERNAME=$MQTT_USER" \
		"PINGAN_MQTT_PASSWORD=$MQTT_PASS" \
		"PINGAN_MQTT_PASSWORD_FILE=$MQ_PASSWD" \
		"PINGAN_MQTT_PID_FILE=$MQ_PID" \
		"PINGAN_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT"; do
		printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
	done
}

cmd_wipe() {
	[[ -d $STACK ]] || {
		say "stack: nothing to wipe ($STACK does not exist)"
		return 0
	}
	local real
	real=$(readlink -f "$STACK")
	case $real in / | "$REPO_DIR" | "$HOME" | /root | /home | /tmp | /var | /usr) die "refusing to delete $real" ;; esac
	[[ -f $MARKER ]] || die "$STACK has no $(basename "$MARKER") marker; refusing to delete it"
	cmd_down
	rm -rf -- "$real"
	say "stack: wiped $real"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status || exit $? ;; # 3 = something is stopped
wipe) cmd_wipe ;;
env) cmd_env ;;
*)
	sed -n '2,/^set -E/{/^set -E/d;s/^# \{0,1\}//;p}' "$0" >&2
	exit 2
	;;
esac
