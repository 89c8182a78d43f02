#!/usr/bin/env bash
# Derives the files the Debian package ships from the operator files in
# conf.d/, which give the from-source paths (/usr/local/bin) and install
# steps. The package installs the binary as /usr/bin/nfs-hostchange, enables
# the sweep timer itself and keeps the snippet and the cron file as examples,
# so its copies differ from conf.d/ in exactly the substitutions below.
#
#   bash debian/sync-from-conf.d           rewrite the debian/ copies
#   bash debian/sync-from-conf.d --check   fail if a copy is out of date
#
# Every substituted text must occur in its conf.d/ file: when conf.d/ changes
# so that one no longer does, this fails instead of shipping a stale copy.
# scripts/package-test runs the check before it builds the package.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="write"
case "${1:-}" in
--check) mode=check ;;
"") ;;
*)
	echo "usage: $0 [--check]" >&2
	exit 2
	;;
esac

SOURCE_BIN=/usr/local/bin/nfs-hostchange
PACKAGE_BIN=/usr/bin/nfs-hostchange
EXAMPLES=/usr/share/doc/nfs-hostchange/examples

text=
file=
# subst FROM TO: replace every FROM in $text, which must contain it.
subst() {
	if [[ "$text" != *"$1"* ]]; then
		echo "sync-from-conf.d: conf.d/$file no longer contains:" >&2
		printf '%s\n' "$1" | sed 's/^/    /' >&2
		echo "  update debian/sync-from-conf.d with it" >&2
		exit 1
	fi
	text=${text//"$1"/"$2"}
}

stale=0
# emit DEST: write $text to debian/DEST, or compare with it under --check.
emit() {
	local dest=debian/$1
	if [ "$mode" = check ]; then
		if ! diff -u --label "$dest (committed)" --label "$dest (from conf.d/$file)" \
			"$dest" <(printf '%s\n' "$text") >&2; then
			stale=1
		fi
	else
		printf '%s\n' "$text" >"$dest"
	fi
}

# load FILE: read conf.d/FILE into $text (without its final newline, which
# emit puts back).
load() {
	file=$1
	text=$(<"conf.d/$file")
}

# The Dovecot snippet, shipped as an example: only the wrapper's path differs.
load 90-nfs-hostchange.conf
subst "$SOURCE_BIN postlogin" "$PACKAGE_BIN postlogin"
emit examples/90-nfs-hostchange.conf

# /etc/dovecot/nfs-hostchange.conf, a conffile: every setting commented out,
# so that installing the package changes nothing until the operator edits it.
load nfs-hostchange.conf
subst '# Format: "key = value" lines; "#" starts a comment line.' \
	'# Format: "key = value" lines; "#" starts a comment line.
#
# As installed by the nfs-hostchange package every setting below is
# commented out, and nothing runs the wrapper yet. To enable it: set
# mail_location here (the same value as in dovecot.conf), copy
# '"$EXAMPLES"'/90-nfs-hostchange.conf
# to /etc/dovecot/conf.d/, run "nfs-hostchange check", then reload Dovecot.
# Package upgrades keep your edits to this file.'
settings=$(printf '%s\n' "$text" | grep -cE '^[a-z_]+ = ' || true)
if [ "$settings" -eq 0 ]; then
	echo "sync-from-conf.d: conf.d/$file sets nothing to comment out" >&2
	exit 1
fi
text=$(printf '%s\n' "$text" | sed -E 's/^([a-z_]+ = )/#\1/')
emit nfs-hostchange.conf

# The sweep units, installed in /lib/systemd/system; the package enables the
# timer.
load nfs-hostchange-sweep.service
subst '# Install as /etc/systemd/system/nfs-hostchange-sweep.service together with
# nfs-hostchange-sweep.timer, then: systemctl enable --now nfs-hostchange-sweep.timer
# Use this or conf.d/nfs-hostchange.cron, not both.' \
	'# Installed by the nfs-hostchange package, which enables
# nfs-hostchange-sweep.timer. Use the timer or the cron example in
# '"$EXAMPLES"'/, not both.'
subst "ExecStart=$SOURCE_BIN " "ExecStart=$PACKAGE_BIN "
emit nfs-hostchange-sweep.service

load nfs-hostchange-sweep.timer
subst '# Runs nfs-hostchange-sweep.service once a day. Install both units in
# /etc/systemd/system/, then: systemctl enable --now nfs-hostchange-sweep.timer' \
	'# Runs nfs-hostchange-sweep.service once a day. The nfs-hostchange package
# enables it on install; "systemctl disable --now nfs-hostchange-sweep.timer"
# turns it off, and upgrades then leave it off.'
emit nfs-hostchange-sweep.timer

# The cron alternative, shipped as an example (not active).
load nfs-hostchange.cron
subst '# for systems without systemd. Install one of the two, not both:
#   install -m 0644 nfs-hostchange.cron /etc/cron.d/nfs-hostchange' \
	'# for systems without systemd. Install one of the two, not both: the
# nfs-hostchange package enables the timer, so on a system with systemd run
# "systemctl disable --now nfs-hostchange-sweep.timer" first. Then:
#   install -m 0644 '"$EXAMPLES"'/nfs-hostchange.cron /etc/cron.d/nfs-hostchange'
subst " $SOURCE_BIN usercache sweep" " $PACKAGE_BIN usercache sweep"
emit examples/nfs-hostchange.cron

if [ "$mode" = check ]; then
	if [ "$stale" -ne 0 ]; then
		echo "sync-from-conf.d: debian/ copies are out of date with conf.d/;" \
			"run: bash debian/sync-from-conf.d" >&2
		exit 1
	fi
	echo "sync-from-conf.d: debian/ copies match conf.d/"
fi
