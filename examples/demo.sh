#!/usr/bin/env bash
# rollgate end to end on a throwaway setup: a bare repository with the hook,
# a clone, real pushes, and four "hosts" that are local directories.
#
#   bash examples/demo.sh          # leaves the demo directory for exploring
#   bash examples/demo.sh --clean  # removes it at the end
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)

bash "$top/.ci/install-deps"
# ROLLGATE_BIN=/path/to/rollgate runs the demo with a binary built already.
if [ -n "${ROLLGATE_BIN:-}" ]; then
    rollgate=$ROLLGATE_BIN
else
    cargo build --release --locked --quiet --manifest-path "$top/Cargo.toml"
    rollgate="${CARGO_TARGET_DIR:-$top/target}/release/rollgate"
fi

demo=$(mktemp -d "${TMPDIR:-/tmp}/rollgate-demo.XXXXXX")
if [ "${1:-}" = "--clean" ]; then trap 'rm -rf "$demo"' EXIT; fi
hosts="$demo/hosts"
mkdir -p "$hosts"

# A demo must not depend on (or change) the user's git config.
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=demo GIT_AUTHOR_EMAIL=demo@example.org
export GIT_COMMITTER_NAME=demo GIT_COMMITTER_EMAIL=demo@example.org
export USER="${USER:-demo}"

step() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
show_hosts() {
    for h in server04 server01 server02 server03; do
        f="$hosts/$h/etc/ssh/sshd_config"
        if [ -f "$f" ]; then
            printf '  %-9s %s\n' "$h" "$(grep -c . "$f") lines, last: $(tail -n 1 "$f")"
        else
            printf '  %-9s (nothing deployed)\n' "$h"
        fi
    done
}

step "a bare repository with the rollgate hook"
git init -q --bare -b main "$demo/infra.git"
"$rollgate" hook install --repo "$demo/infra.git"

step "a clone with the example config, hosts as local directories"
git clone -q "$demo/infra.git" "$demo/work" 2>/dev/null
cd "$demo/work"
mkdir -p files
cp -r "$here/infra/files/sshd" "$here/infra/files/nginx" files/
cat > rollgate.toml <<TOML
default_group = "canary"
lock_wait = "30s"

[services.sshd]
source = "files/sshd/{version}"
target = "/etc/ssh"
check = ["sh", "-c", "ssh-keygen -q -t ed25519 -N '' -f /tmp/hk && exec /usr/sbin/sshd -t -f \"\$1\" -o HostKey=/tmp/hk", "sh", "{dir}/sshd_config"]
deploy = ["rsync", "-a", "--checksum", "--delete", "--mkpath", "{dir}/", "{root}/{host}/etc/ssh/"]
# A host cannot run a revision while it has a file named BROKEN-<revision>.
health = ["test", "!", "-e", "{root}/{host}/BROKEN-{rev}"]
health_wait = "1s"

[services.nginx]
source = "files/nginx/{nginx_version}"
target = "/etc/nginx"
check = ["/usr/sbin/nginx", "-t", "-q", "-e", "stderr", "-c", "{dir}/nginx.conf"]
deploy = ["rsync", "-a", "--checksum", "--delete", "--mkpath", "{dir}/", "{root}/{host}/etc/nginx/"]

[groups.canary]
hosts = ["server04"]
vars = { version = "9.6", nginx_version = "1.22", root = "$hosts" }

[groups.farm]
hosts = ["server01", "server02", "server03"]
vars = { version = "9.2", nginx_version = "1.22", root = "$hosts" }
batch = 2
TOML
git add -A && git commit -qm "sshd and nginx for the canary and the farm"

step "git push: validated, then deployed to the canary only"
git push origin main
show_hosts

step "widen the same revision to every group: push it to refs/deploy/all"
# (-o all works on a push that carries a new commit; with nothing new to
# send, git runs no hook, so an already pushed revision is widened by ref.)
git push origin main:refs/deploy/all
show_hosts

step "a broken sshd_config is rejected before anything deploys"
echo "PermitRootLogn no" >> files/sshd/9.2/sshd_config
git commit -qam "typo in sshd_config" && { git push origin main || true; }
git reset -q --hard HEAD~1

step "a good change, but server02 fails its health check: the rollout stops and server02 is restored"
echo "ClientAliveInterval 120" >> files/sshd/9.2/sshd_config
git commit -qam "shorter client alive interval"
touch "$hosts/server02/BROKEN-$(git rev-parse HEAD)"
git push -o group=farm origin main || true
show_hosts
rm "$hosts/server02/BROKEN-"*

step "fixed: the same push goes through"
git push -o group=farm origin main
show_hosts

step "rollgate status (on the server)"
"$rollgate" status --repo "$demo/infra.git"

step "what a rollback of the farm to the first revision would change"
first=$(git rev-list --max-parents=0 HEAD)
"$rollgate" plan --rev "$first" --group farm --repo "$demo/infra.git" | head -n 20

step "rollback, pinned to that revision; the branch stays where it is"
"$rollgate" rollback --to "$first" --group farm --repo "$demo/infra.git"
show_hosts
echo "  main is still at $(git -C "$demo/infra.git" rev-parse --short main)"

step "rollgate log -n 3"
"$rollgate" log -n 3 --repo "$demo/infra.git"

printf '\nThe demo lives in %s (remove it with: rm -rf %s)\n' "$demo" "$demo"
