#!/bin/sh
# PostgreSQL bulk import against its floor, in the same run: cardlink's
# `db import` of gen-demo CSV files into an empty registry, and psql's
# `\copy` of the same files into the same schema and indexes (a registry
# made by cardlink's own migrations: `db init`), the read model left empty
# (the floor has no read model to build, no checks, no audit row).
#
#   ADMIN=postgres://postgres@127.0.0.1:55432/postgres PERSONS=1000000 MONTHS=12 \
#     CTL=target/release/cardlinkctl benches/pg_import_floor.sh
#
# ADMIN: a superuser's URL (databases pgimp_cardlink and pgimp_floor are
# made and dropped there). CSV: a directory of gen-demo --csv files to use
# (else PERSONS and MONTHS are generated into a temporary directory).
# Prints each step's time and the ratio cardlink / floor.
set -eu
: "${ADMIN:?set ADMIN to a superuser URL}"
CTL=${CTL:-target/release/cardlinkctl}
PERSONS=${PERSONS:-1000000}
MONTHS=${MONTHS:-12}
base=${ADMIN%/*}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "${CSV:-}" ]; then
    CSV=$tmp/csv
    "$CTL" db --database "$tmp/unused.db" gen-demo --persons "$PERSONS" --months "$MONTHS" --csv "$CSV" >/dev/null
fi
now() { date +%s.%N; }
fresh() {
    psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
    "$CTL" db --database "$base/$1" init >/dev/null
}

# The floor: \copy of each file into its table, one transaction per group
# of files as cardlink imports them (persons, cards, accounts, links; then
# contributions), columns named as in the files.
copy_cmd() { # table file
    printf '\\copy %s (%s) FROM %s WITH (FORMAT csv, HEADER)\n' "$1" "$(head -1 "$2")" "$2"
}
fresh pgimp_floor
floor() { # files...
    {
        echo 'BEGIN;'
        for f in "$@"; do
            t=$(basename "$f" .csv)
            [ "$t" = links ] && t=family_links
            copy_cmd "$t" "$f"
        done
        echo 'COMMIT;'
    } | psql -q -v ON_ERROR_STOP=1 "$base/pgimp_floor"
}
t0=$(now)
floor "$CSV/persons.csv" "$CSV/cards.csv" "$CSV/accounts.csv" "$CSV/links.csv"
t1=$(now)
floor "$CSV/contributions.csv"
t2=$(now)

fresh pgimp_cardlink
t3=$(now)
"$CTL" db --database "$base/pgimp_cardlink" import "$CSV/persons.csv" "$CSV/cards.csv" "$CSV/accounts.csv" "$CSV/links.csv" >/dev/null
t4=$(now)
"$CTL" db --database "$base/pgimp_cardlink" import "$CSV/contributions.csv" >/dev/null
t5=$(now)

awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$t4" -v f="$t5" 'BEGIN {
    f1 = b - a; f2 = c - b; c1 = e - d; c2 = f - e;
    printf "%-34s %9s %9s %7s\n", "step", "cardlink", "floor", "ratio";
    printf "%-34s %8.1fs %8.1fs %6.2fx\n", "persons, cards, accounts, links", c1, f1, c1 / f1;
    printf "%-34s %8.1fs %8.1fs %6.2fx\n", "contributions", c2, f2, c2 / f2;
    printf "%-34s %8.1fs %8.1fs %6.2fx\n", "total", c1 + c2, f1 + f2, (c1 + c2) / (f1 + f2);
}'
psql -q "$ADMIN" -c "DROP DATABASE pgimp_floor WITH (FORCE)" -c "DROP DATABASE pgimp_cardlink WITH (FORCE)"
