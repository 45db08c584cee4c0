#!/bin/sh
# Resolve latency on a cold PostgreSQL server, with and without the
# daemon's prewarm: for each pass the server is stopped (its shared
# buffers gone), every file of its data directory dropped from the OS's
# page cache (GNU dd's `iflag=nocache count=0`; the script checks with
# util-linux's fincore that nothing of them stays cached), the server
# started again, and `cargo bench --bench registry_pg` run at once on the
# registry loaded there (CARDLINK_BENCH_LOADED=1). Only the database's
# files are dropped: `echo 3 > /proc/sys/vm/drop_caches` would also drop
# the programs' own code (postgres, the bench), which a server restart
# does not, and the first calls would then wait for it to be read back.
#
#   PGDATA=/var/tmp/perfpg/data PGBIN=/usr/lib/postgresql/15/bin \
#   CARDLINK_BENCH_PG=postgres://postgres@127.0.0.1:55500/bench \
#     benches/pg_cold_resolve.sh
#
# PGDATA: the server's data directory (its postgresql.conf names its port);
# the server runs as the owner of PGDATA. N (50000) resolutions a pass,
# SEED (7): the same persons in every pass. PASSES: "off on" (default).
# PLAIN=0: resolutions only, without the plain queries between them.
set -eu
: "${PGDATA:?set PGDATA to the server's data directory}"
: "${CARDLINK_BENCH_PG:?set CARDLINK_BENCH_PG to the loaded registry's URL}"
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
owner=$(stat -c %U "$PGDATA")
pgctl() { runuser -u "$owner" -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/../cold.log" -w "$@" >/dev/null; }
cargo bench --bench registry_pg --no-run >/dev/null 2>&1
for prewarm in ${PASSES:-off on}; do
    pgctl stop -m fast
    sync
    find "$PGDATA" -type f -exec dd if={} iflag=nocache count=0 status=none \;
    cached=$(find "$PGDATA" -type f -print0 | xargs -0 fincore -b -n -o RES | awk '{s += $1} END {print s + 0}')
    [ "$cached" -lt 1048576 ] || { echo "the data directory is still cached: $cached bytes" >&2; exit 1; }
    pgctl start
    echo "== cold server (${cached} bytes of its files cached), prewarm $prewarm ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg))"
    CARDLINK_BENCH_LOADED=1 CARDLINK_BENCH_N=${N:-50000} CARDLINK_BENCH_SEED=${SEED:-7} \
        CARDLINK_BENCH_PLAIN=${PLAIN:-1} CARDLINK_BENCH_PREWARM=$([ "$prewarm" = on ] && echo 1 || echo 0) \
        cargo bench --bench registry_pg 2>/dev/null
done
