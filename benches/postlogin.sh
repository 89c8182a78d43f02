#!/bin/sh
# The login check of `nfs-hostchange postlogin`, written as a plain POSIX
# shell script, for comparison in benches/login.py. It is what an admin might
# write instead of the Rust wrapper, kept as cheap as sh allows: builtins
# wherever possible, external programs only for MD5 (md5sum), the lock
# (flock) and the file status (stat).
#
#   postlogin.sh COMMAND [ARGS...]     (e.g. script-login -d postlogin.sh)
#
# Settings, fixed by the admin (here overridable from the environment so the
# benchmark can point them at its fixture):
#   NFSHC_LISTINDEX_ROOT  the static part of LISTINDEX=ROOT/%2.256Nu/%u/...
#                         (default /dev/shm/dovecot-listindex)
#   NFSHC_INDEX           the user's INDEX on NFS (default $HOME/Maildir)
#   NFSHC_HOSTNAME        this backend's name (default: the host name)
#
# The same algorithm as the wrapper (see DESIGN.md), minus what a shell
# cannot do cheaply: no refusal of user names that would leave the LISTINDEX
# root, no ESTALE retries, no migration, no fsync of the record. Do not
# deploy it: it exists to measure what the Rust wrapper saves.
PATH=/usr/bin:/bin
umask 077
root=${NFSHC_LISTINDEX_ROOT:-/dev/shm/dovecot-listindex}
index=${NFSHC_INDEX:-$HOME/Maildir}

# Deletes the local list index (the record's content goes first).
drop() {
	: >"$dir/.lasthost"
	rm -f -- "$dir"/dovecot.list.index*
}

check() {
	[ -n "$USER" ] || return 1
	# %2.256Nu: MD5 of the user; its first 8 bytes as a big-endian number,
	# modulo 256, in 2 hex digits: the 8th byte, hex digits 15 and 16.
	sum=$(printf %s "$USER" | md5sum) || return 1
	h=${sum#??????????????}
	h=${h%"${h#??}"}
	dir=$root/$h/$USER
	[ -d "$dir" ] || mkdir -p -- "$dir" || return 1

	# The record, locked (at most 5 s); start over when a cleaner removed
	# it while we waited.
	tries=0
	while :; do
		{ command exec 9<>"$dir/.lasthost"; } 2>/dev/null || return 1
		flock -w 5 9 || { drop; return 1; }
		[ "$dir/.lasthost" -ef /dev/fd/9 ] && break
		tries=$((tries + 1))
		[ "$tries" -lt 5 ] || return 1
	done
	rec=
	IFS= read -r rec <&9

	# INDEX/.lasthost on NFS: open (close-to-open consistency), then the
	# status of the open file, then its content.
	cur=
	if { command exec 8<"$index/.lasthost"; } 2>/dev/null; then
		st=$(stat -L -c '%i %.9Y' /dev/fd/8) && IFS= read -r content <&8 &&
			cur="$st $content"
		exec 8<&-
	fi
	if [ -n "$cur" ] && [ "$cur" = "$rec" ]; then
		# Current. Rewriting the record sets its mtime (a builtin "touch").
		printf '%s\n' "$rec" >"$dir/.lasthost"
		return 0
	fi

	# Another backend served the user (or no record): drop, stamp, record.
	drop
	host=${NFSHC_HOSTNAME:-}
	[ -n "$host" ] || IFS= read -r host </proc/sys/kernel/hostname
	token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	tmp=$index/.lasthost.tmp.$$
	if [ -d "$index" ] && printf '%s %s\n' "$host" "$token" >"$tmp" &&
		sync -- "$tmp" && mv -f -- "$tmp" "$index/.lasthost"; then
		st=$(stat -c '%i %.9Y' -- "$index/.lasthost") &&
			printf '%s %s %s\n' "$st" "$host" "$token" >"$dir/.lasthost"
	else
		rm -f -- "$tmp"
	fi
	return 0
}

check
# Close the record (which releases the lock) and go on with the login.
exec 9<&-
exec "$@"
