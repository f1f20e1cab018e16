# slurmbatch result watcher: runs on the login node for a whole session, over one SSH channel.
#
#   sh -c "$(cat watch.sh)" slurmbatch-watch DIR INTERVAL BEAT
#
# Lists DIR every INTERVAL seconds and, after each listing that differs from the one before, prints
#   +NAME   for each name that appeared
#   -NAME   for each name that disappeared
#   .       the end of that listing's changes
# The first listing reports every name and always ends with ".". After BEAT quiet listings it prints a
# lone "." (a heartbeat): the client tells a dead channel from a quiet one, and once the client is gone
# the write fails and ends this program even where sshd could not signal it. Other lines are
# diagnostics.
#
# POSIX sh, ls and awk only: the login node's python may not be the jobs' one, or may be missing. Plain
# readdir, no inotify: inotify does not see files that other NFS/Lustre clients (compute nodes) create.
# Dotfiles and *.tmp are skipped: the runner writes ".NAME.XXXX.tmp" and renames it to NAME when done.
dir=$1
interval=$2
beat=$3
if [ ! -d "$dir" ]; then
    echo "!no directory $dir"
    exit 2
fi
# A sleep that rejects fractions would fail at once and turn the loop into a busy one.
sleep "$interval" 2>/dev/null || interval=1
prev=
quiet=0
first=1
while :; do
    # $(...) drops trailing newlines only; ls prints one name per line when its output is not a terminal.
    if ! cur=$(ls -1 -- "$dir" 2>&1); then
        echo "!cannot list $dir: $cur"
        exit 3
    fi
    if [ -n "$first" ] || [ "$cur" != "$prev" ]; then
        # One awk per changed listing, reading both listings to end of file: awk reading a pipe that
        # stays open may buffer its input (mawk does), so a long-running awk would sit on the news.
        printf '%s\n/\n%s\n' "$prev" "$cur" | awk '
            $0 == "/" { second = 1; next }
            $0 == "" || /^\./ || /\.tmp$/ { next }
            !second { old[$0] = 1; next }
            $0 in old { delete old[$0]; next }
            { print "+" $0 }
            END { for (name in old) print "-" name; print "." }'
        prev=$cur
        first=
        quiet=0
    else
        quiet=$((quiet + 1))
        if [ "$quiet" -ge "$beat" ]; then
            echo .
            quiet=0
        fi
    fi
    sleep "$interval"
done
