#!/bin/sh
# Installs psproxy from this unpacked release archive and runs it under
# systemd, as root, on Amazon Linux 2023, Debian, Ubuntu or any systemd
# Linux with glibc 2.34 or later.
#
#   sh install.sh              install, or upgrade to this archive's version
#   sh install.sh --uninstall  remove what install.sh installed; keep the
#                              certificates (/var/lib/psproxy) and an edited
#                              Caddyfile
#
# Running it again is safe: it lays down the same files, keeps the
# Caddyfile, and restarts psproxy on this archive's binary.
set -eu

VERSION=@VERSION@
LIBDIR=/usr/local/lib/psproxy        # one directory per version
BIN=/usr/local/bin/psproxy           # a link to the current version's binary
UNIT=/etc/systemd/system/psproxy.service
CONFDIR=/etc/psproxy
CADDYFILE=$CONFDIR/Caddyfile
STATEDIR=/var/lib/psproxy
ACCOUNT=psproxy

# Where each family keeps its CA bundle; psproxy looks in the same places.
CA_BUNDLES="/etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt
/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem /etc/ssl/ca-bundle.pem /etc/ssl/cert.pem"

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

usage() {
    echo "usage: sh install.sh [--uninstall]"
}

here=$(cd "$(dirname "$0")" && pwd)

# What a run interrupted half-way must not leave behind.
new=""
cleanup() {
    [ -z "$new" ] || rm -rf "$new"
    rm -f "$BIN.new.$$" "$UNIT.new.$$"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

have() { command -v "$1" >/dev/null 2>&1; }

# True when files A and B have the same bytes (coreutils only: no cmp).
same_file() {
    [ -f "$1" ] && [ -f "$2" ] && [ "$(cksum <"$1")" = "$(cksum <"$2")" ]
}

systemd_present() {
    have systemctl
}

os_name() {
    if [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091 # the host's file, read for its name only
        (. /etc/os-release && printf '%s' "${PRETTY_NAME:-${ID:-linux}}")
    else
        printf 'linux'
    fi
}

nologin_shell() {
    for s in /usr/sbin/nologin /sbin/nologin /bin/false; do
        if [ -x "$s" ]; then
            printf '%s' "$s"
            return
        fi
    done
    printf '/bin/false'
}

# The version the link points at now, or nothing.
current_version() {
    target=$(readlink "$BIN" 2>/dev/null || true)
    case $target in
    "$LIBDIR"/*/psproxy)
        target=${target#"$LIBDIR"/}
        printf '%s' "${target%/psproxy}"
        ;;
    esac
}

# Whether NAME is in the local DATABASE file (/etc/passwd, /etc/group).
# Not getent: while a source-built psproxy runs with DynamicUser=, systemd's
# NSS module shows its dynamic psproxy user, which ends with the service.
local_entry() {
    grep -q "^$2:" "/etc/$1"
}

ensure_account() {
    if ! have useradd || ! have groupadd; then
        die "useradd and groupadd are missing: dnf install shadow-utils (Amazon Linux)" \
            "or apt-get install passwd (Debian)"
    fi
    if ! local_entry group "$ACCOUNT"; then
        groupadd --system "$ACCOUNT"
        say "created system group $ACCOUNT"
    fi
    if local_entry passwd "$ACCOUNT"; then
        say "system user $ACCOUNT exists"
    else
        useradd --system --gid "$ACCOUNT" --home-dir "$STATEDIR" --no-create-home \
            --shell "$(nologin_shell)" --comment "psproxy reverse proxy" "$ACCOUNT"
        say "created system user $ACCOUNT"
    fi
}

# The trailing slashes follow a link left by DynamicUser= (to
# /var/lib/private/psproxy; systemd moves it back once the unit has none).
# Files an earlier dynamic or deleted user left are handed over too: systemd
# would not look below a top directory that is already the right owner's.
ensure_state_dir() {
    mkdir -p "$STATEDIR/"
    if [ "$(stat -L -c %U:%G "$STATEDIR/")" != "$ACCOUNT:$ACCOUNT" ] ||
        [ -n "$(find "$STATEDIR/" \( ! -user "$ACCOUNT" -o ! -group "$ACCOUNT" \) -print | head -n 1)" ]; then
        chown -R "$ACCOUNT:$ACCOUNT" "$STATEDIR/"
        say "gave $STATEDIR and everything in it to $ACCOUNT"
    fi
    chmod 0700 "$STATEDIR/"
    say "certificates and ACME account are kept in $STATEDIR (owner $ACCOUNT, mode 0700)"
}

# Sums of every file of directory DIR, by path: equal trees, equal sums.
tree_sums() {
    (cd "$1" && find . -type f | LC_ALL=C sort | while IFS= read -r f; do
        printf '%s %s\n' "$(cksum <"$f")" "$f"
    done)
}

# Copies the archive to $LIBDIR/$VERSION, unless the same files are there,
# then points $BIN at it with one rename. The version it replaces is kept
# to go back to (its name in $LIBDIR/previous); older ones are removed.
install_tree() {
    current=$(current_version)
    mkdir -p "$LIBDIR"
    chmod 0755 "$LIBDIR"
    rm -rf "$LIBDIR"/.*.new.* "$LIBDIR"/.*.old.*  # what an interrupted run left
    new="$LIBDIR/.$VERSION.new.$$"
    mkdir "$new"
    for f in psproxy lib install.sh psproxy.service Caddyfile README.md LICENSES; do
        cp -R "$here/$f" "$new/"
    done
    chown -R 0:0 "$new"
    chmod -R u=rwX,go=rX "$new"
    if [ -d "$LIBDIR/$VERSION" ] && [ "$(tree_sums "$new")" = "$(tree_sums "$LIBDIR/$VERSION")" ]; then
        rm -rf "$new"
    elif [ -e "$LIBDIR/$VERSION" ]; then
        # the same version, other files (a rebuilt archive)
        old="$LIBDIR/.$VERSION.old.$$"
        mv "$LIBDIR/$VERSION" "$old"
        mv "$new" "$LIBDIR/$VERSION"
        rm -rf "$old"
    else
        mv "$new" "$LIBDIR/$VERSION"
    fi
    new=""
    if [ -e "$BIN" ] && [ ! -L "$BIN" ]; then
        say "replacing $BIN, a file install.sh did not put there"
    fi
    mkdir -p "$(dirname "$BIN")"
    ln -s "$LIBDIR/$VERSION/psproxy" "$BIN.new.$$"
    mv -f "$BIN.new.$$" "$BIN"
    if [ -n "$current" ] && [ "$current" != "$VERSION" ]; then
        printf '%s\n' "$current" >"$LIBDIR/previous"
        say "installed psproxy $VERSION in $LIBDIR/$VERSION (was $current); $BIN points to it"
    else
        say "installed psproxy $VERSION in $LIBDIR/$VERSION; $BIN points to it"
    fi
    previous=$(cat "$LIBDIR/previous" 2>/dev/null || true)
    for d in "$LIBDIR"/*; do
        [ -d "$d" ] || continue
        v=${d##*/}
        if [ "$v" != "$VERSION" ] && [ "$v" != "$previous" ]; then
            rm -rf "$d"
            say "removed psproxy $v"
        fi
    done
    if [ -n "$previous" ] && [ "$previous" != "$VERSION" ] && [ -d "$LIBDIR/$previous" ]; then
        say "kept psproxy $previous to go back to: sh $LIBDIR/$previous/install.sh"
    fi
}

install_config() {
    mkdir -p "$CONFDIR"
    chmod 0755 "$CONFDIR"
    if [ -e "$CADDYFILE" ]; then
        say "kept $CADDYFILE"
    else
        cp "$here/Caddyfile" "$CADDYFILE"
        chmod 0644 "$CADDYFILE"
        say "installed the default $CADDYFILE (it answers on port 80 until you add your site)"
    fi
}

report_ca_bundle() {
    for b in $CA_BUNDLES; do
        if [ -r "$b" ]; then
            say "CA bundle: $b (psproxy finds it by itself)"
            return
        fi
    done
    say "warning: no CA bundle found; ACME needs one:" \
        "dnf install ca-certificates (Amazon Linux) or apt-get install ca-certificates (Debian)"
}

install_unit() {
    mkdir -p "$(dirname "$UNIT")"
    cp "$here/psproxy.service" "$UNIT.new.$$"
    chmod 0644 "$UNIT.new.$$"
    mv -f "$UNIT.new.$$" "$UNIT"
    say "installed $UNIT"
}

start_service() {
    if ! systemd_present; then
        say "systemctl not found: psproxy is installed but not started;" \
            "run it with: $BIN run -c $CADDYFILE"
        return 0
    fi
    systemctl daemon-reload
    systemctl enable --quiet psproxy.service
    if systemctl is-active --quiet psproxy.service; then
        systemctl restart psproxy.service ||
            die "psproxy $VERSION did not restart (see journalctl -u psproxy -n 50);" \
                "to go back: sh $LIBDIR/$(cat "$LIBDIR/previous" 2>/dev/null || echo VERSION)/install.sh"
        say "restarted psproxy on $VERSION"
    else
        systemctl start psproxy.service ||
            die "psproxy did not start: see journalctl -u psproxy -n 50"
        say "started psproxy $VERSION (enabled at boot)"
    fi
    if ! systemctl is-active --quiet psproxy.service; then
        die "psproxy did not start: see journalctl -u psproxy -n 50"
    fi
    say "logs: journalctl -u psproxy -f; after editing $CADDYFILE: systemctl reload psproxy"
}

do_install() {
    [ -x "$here/psproxy" ] || die "run this from the unpacked archive: $here/psproxy is missing"
    if ! "$here/psproxy" --version >/dev/null 2>&1; then
        die "$here/psproxy does not run on this host (it needs glibc 2.34 or later on x86_64)"
    fi
    say "installing $("$here/psproxy" --version | head -n 1) on $(os_name)"
    # An upgrade checks the Caddyfile in place with the new binary before it
    # changes anything, so a file the new version refuses leaves the old one
    # installed and serving.
    if [ -e "$CADDYFILE" ] && ! "$here/psproxy" validate -c "$CADDYFILE" >/dev/null; then
        die "$CADDYFILE is not valid for psproxy $VERSION (errors above); nothing was" \
            "changed: fix the file and run install.sh again"
    fi
    ensure_account
    ensure_state_dir
    install_tree
    install_config
    report_ca_bundle
    install_unit
    start_service
}

do_uninstall() {
    if [ -e "$UNIT" ] && systemd_present; then
        systemctl disable --now psproxy.service >/dev/null 2>&1 || true
        say "stopped and disabled psproxy"
    fi
    if [ -e "$UNIT" ]; then
        rm -f "$UNIT"
        say "removed $UNIT"
        if systemd_present; then
            systemctl daemon-reload || true
        fi
    fi
    if [ -n "$(current_version)" ]; then
        rm -f "$BIN"
        say "removed $BIN"
    fi
    if [ -e "$CADDYFILE" ]; then
        # install.sh put the default there; an edited file is the user's.
        default=""
        for d in "$here/Caddyfile" "$LIBDIR"/*/Caddyfile; do
            if same_file "$CADDYFILE" "$d"; then
                default=$d
                break
            fi
        done
        if [ -n "$default" ]; then
            rm -f "$CADDYFILE"
            rmdir "$CONFDIR" 2>/dev/null || true
            say "removed the default $CADDYFILE"
        else
            say "kept $CADDYFILE (edited)"
        fi
    fi
    if [ -d "$LIBDIR" ]; then
        rm -rf "$LIBDIR"
        say "removed $LIBDIR"
    fi
    # The account owns the certificates: removing it could give their UID
    # to the next system user. Both stay until the administrator drops them.
    if [ -d "$STATEDIR" ]; then
        say "kept $STATEDIR (certificates and ACME account) and the system user $ACCOUNT;" \
            "to remove them too: userdel $ACCOUNT && rm -rf $STATEDIR"
    fi
}

mode=install
for arg in "$@"; do
    case $arg in
    --uninstall) mode=uninstall ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done

[ "$(id -u)" = 0 ] || die "run as root: sudo sh install.sh${1:+ $1}"

if [ "$mode" = uninstall ]; then
    do_uninstall
else
    do_install
fi
