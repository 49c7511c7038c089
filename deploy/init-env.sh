#!/bin/sh
# Create the compose stack's .env with a fresh API key, unless one is there already.
#
#   deploy/init-env.sh            # writes ./.env next to docker-compose.yml
#   deploy/init-env.sh path/.env  # somewhere else
#
# docker compose reads .env from the project directory; the stack refuses to start without
# STREAMBALANCE_API_KEY (the service would otherwise take writes from anyone who reaches it).
# The key is 48 hex characters from the system's random source, and the file is readable
# by its owner only. Running the script again keeps the existing key.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
target=${1:-"$here/.env"}

if [ -f "$target" ] && grep -q '^STREAMBALANCE_API_KEY=.' "$target"; then
    echo "$target already has STREAMBALANCE_API_KEY; keeping it"
    exit 0
fi
key=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
umask 077
{
    echo "# Written by deploy/init-env.sh: the X-API-Key of the service's write routes."
    echo "STREAMBALANCE_API_KEY=$key"
    echo "# Published ports listen on this address only (0.0.0.0: every interface)."
    echo "BIND_ADDRESS=127.0.0.1"
} >> "$target"
echo "wrote a new STREAMBALANCE_API_KEY to $target (send it as the X-API-Key header)"
